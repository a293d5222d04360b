// A leveled logger writing one line per event to stderr: "<ISO time> <LEVEL> <message>".
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export class Logger {
  constructor(
    private level: LogLevel = 'info',
    private sink: (line: string) => void = (line) => process.stderr.write(line + '\n'),
  ) {}

  setLevel(level: LogLevel): void {
    this.level = level;
  }
  error(msg: string): void {
    this.write('error', msg);
  }
  warn(msg: string): void {
    this.write('warn', msg);
  }
  info(msg: string): void {
    this.write('info', msg);
  }
  debug(msg: string): void {
    this.write('debug', msg);
  }

  private write(level: LogLevel, msg: string): void {
    if (RANK[level] > RANK[this.level]) return;
    this.sink(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}`);
  }
}
