// Public API of the starling package.
export { createServer, Server, type ServerStats, type WorkgroupCounters, type Rates } from './server';
export { loadConfig, resolveConfig, formatEffectiveConfig, ConfigError, type Config, type Loaded } from './config/config';
export { Logger, type LogLevel } from './log';
export { Monitor, STATS_SUBJECT } from './monitor/monitor';
export { INDICATORS, PROTOCOL_ERROR_CODES, type IndicatorDef, type Snapshot } from './monitor/indicators';
