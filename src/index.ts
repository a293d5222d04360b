// Public API of the starling package.
export {
  createServer,
  Server,
  type AuthorizeClient,
  type AuthorizeHook,
  type ClusterStatus,
  type Counters,
  type Grant,
  type ServerHooks,
  type ServerStats,
  type WorkgroupStats,
} from './server';
export { loadConfig, resolveConfig, formatEffectiveConfig, ConfigError, type Config, type Loaded } from './config/config';
export { Logger, type LogLevel } from './log';
export { Monitor, STATS_SUBJECT } from './monitor/monitor';
export {
  INDICATORS,
  IndicatorSet,
  metricName,
  type IndicatorDef,
  type Indicators,
  type ProcessIndicators,
  type Snapshot,
  type SnapshotCluster,
} from './monitor/indicators';
export { type CounterInfo } from './native';
export { rateName } from './stats';
