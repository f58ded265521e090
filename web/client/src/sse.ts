// An event-stream parser that follows WHATWG HTML, section 9.2
// "Server-sent events", "Interpreting an event stream": lines end with CRLF,
// LF or CR; a blank line dispatches the event; data lines join with LF; a
// comment line starts with a colon; id sets the last event id unless it
// contains NUL; retry takes only ASCII digits. An event that the stream ends
// before its blank line is discarded.

/** One dispatched event. */
export interface SSEEvent {
  /** The event field, or "message". */
  readonly type: string;
  readonly data: string;
  /** The last event id after this event, as EventSource's lastEventId. */
  readonly lastEventId: string;
}

/**
 * SSEParser turns the text of an event stream, in chunks of any size, into
 * events. It keeps the last event id and the reconnection time across
 * connections, as an EventSource does; call reset when a new connection
 * starts.
 */
export class SSEParser {
  /** The last event id: sent as Last-Event-ID when reconnecting. */
  lastEventId: string;
  /** The reconnection time in milliseconds from the last retry field, if any. */
  retry: number | undefined;

  private line = "";
  private skipLF = false; // the previous chunk ended in CR: a leading LF belongs to it
  private started = false; // past the optional byte order mark
  private data = "";
  private hasData = false;
  private eventType = "";
  private idBuffer: string;

  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId;
  }

  /** reset forgets a partly read event, for a new connection. */
  reset(): void {
    this.line = "";
    this.skipLF = false;
    this.started = false;
    this.data = "";
    this.hasData = false;
    this.eventType = "";
    this.idBuffer = this.lastEventId;
  }

  /** push parses the next chunk of the stream and returns the events it completes. */
  push(chunk: string): SSEEvent[] {
    const out: SSEEvent[] = [];
    let i = 0;
    if (!this.started && chunk.length > 0) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) {
        i = 1;
      }
    }
    if (this.skipLF && i < chunk.length) {
      if (chunk[i] === "\n") {
        i++;
      }
      this.skipLF = false;
    }
    while (i < chunk.length) {
      let end = i;
      while (end < chunk.length && chunk[end] !== "\n" && chunk[end] !== "\r") {
        end++;
      }
      if (end === chunk.length) {
        this.line += chunk.slice(i);
        break;
      }
      const line = this.line + chunk.slice(i, end);
      this.line = "";
      i = end + 1;
      if (chunk[end] === "\r") {
        if (i === chunk.length) {
          this.skipLF = true;
        } else if (chunk[i] === "\n") {
          i++;
        }
      }
      const ev = this.processLine(line);
      if (ev !== undefined) {
        out.push(ev);
      }
    }
    return out;
  }

  private processLine(line: string): SSEEvent | undefined {
    if (line === "") {
      return this.dispatch();
    }
    if (line[0] === ":") {
      return undefined; // a comment, such as the bridge's ": ping"
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") {
        value = value.slice(1);
      }
    }
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.idBuffer = value;
        }
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) {
          this.retry = Number.parseInt(value, 10);
        }
        break;
    }
    return undefined;
  }

  private dispatch(): SSEEvent | undefined {
    this.lastEventId = this.idBuffer;
    const type = this.eventType === "" ? "message" : this.eventType;
    const data = this.data.slice(0, -1);
    const hasData = this.hasData;
    this.data = "";
    this.hasData = false;
    this.eventType = "";
    if (!hasData) {
      return undefined;
    }
    return { type, data, lastEventId: this.lastEventId };
  }
}
