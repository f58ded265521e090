// A queue with one producer and one consumer that iterates it with
// for await.

export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private failWaiter: ((err: unknown) => void) | undefined;
  private spaceWaiters: (() => void)[] = [];
  private closed = false;
  private error: unknown = undefined;
  private iterating = false;

  /**
   * onReturn runs when the consumer stops early (break, return or throw out
   * of a for await loop).
   */
  constructor(private readonly onReturn: () => void = () => {}) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.closed) {
      return;
    }
    if (this.waiter !== undefined) {
      const w = this.waiter;
      this.waiter = undefined;
      this.failWaiter = undefined;
      w({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  /**
   * close ends the queue: the consumer gets what is queued (nothing when
   * discard is set), then err or the end.
   */
  close(err?: unknown, discard = false): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.error = err;
    if (discard) {
      this.items.length = 0;
    }
    this.wakeSpace();
    if (this.waiter !== undefined && this.items.length === 0) {
      const w = this.waiter;
      const f = this.failWaiter;
      this.waiter = undefined;
      this.failWaiter = undefined;
      if (err !== undefined) {
        f?.(err);
      } else {
        w({ value: undefined, done: true });
      }
    }
  }

  /** space resolves when fewer than limit items are queued, or the queue is closed. */
  space(limit: number): Promise<void> {
    if (this.items.length < limit || this.closed) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.spaceWaiters.push(resolve));
  }

  private wakeSpace(): void {
    const ws = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const w of ws) {
      w();
    }
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      const value = this.items.shift() as T;
      this.wakeSpace();
      return Promise.resolve({ value, done: false });
    }
    if (this.closed) {
      if (this.error !== undefined) {
        const err = this.error;
        this.error = undefined; // thrown once
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterating) {
      throw new Error("a stream can be iterated only once");
    }
    this.iterating = true;
    return {
      next: () => this.next(),
      return: () => {
        if (!this.closed) {
          this.onReturn();
        }
        this.closed = true;
        this.items.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** Deferred is a promise with its resolve function. */
export class Deferred<T> {
  readonly promise: Promise<T>;
  resolve!: (v: T) => void;
  settled = false;
  constructor() {
    this.promise = new Promise<T>((resolve) => {
      this.resolve = (v: T) => {
        if (!this.settled) {
          this.settled = true;
          resolve(v);
        }
      };
    });
  }
}
