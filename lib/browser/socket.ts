/**
 * A WebSocket that holds the server's first message (INFO, with the login nonce) back
 * from nats.js until the nonce is signed. nats.js builds its CONNECT synchronously from
 * an authenticator; a non-extractable WebCrypto key signs only asynchronously. So the
 * signature is made first, then INFO is handed on and the authenticator finds it ready.
 */
type Handler = ((ev: unknown) => void) | null;

const INFO_LINE = /^INFO\s+(\{.*\})\s*\r\n/;

export class SigningSocket {
  readonly #ws: WebSocket;
  readonly #sign: (nonce: string) => Promise<unknown>;
  #held: MessageEvent[] | undefined = [];
  #text = "";
  onopen: Handler = null;
  onmessage: Handler = null;
  onclose: Handler = null;
  onerror: Handler = null;

  constructor(url: string, sign: (nonce: string) => Promise<unknown>) {
    this.#ws = new WebSocket(url);
    this.#sign = sign;
    this.#ws.binaryType = "arraybuffer";
    this.#ws.onopen = (ev) => this.onopen?.(ev);
    this.#ws.onclose = (ev) => this.onclose?.(ev);
    this.#ws.onerror = (ev) => this.onerror?.(ev);
    this.#ws.onmessage = (ev) => this.#message(ev);
  }

  set binaryType(_: string) {
    // always arraybuffer (nats.js asks for it too)
  }
  get binaryType(): string {
    return this.#ws.binaryType;
  }
  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }
  get readyState(): number {
    return this.#ws.readyState;
  }
  send(data: ArrayBufferLike | Uint8Array): void {
    this.#ws.send(data as ArrayBuffer);
  }
  close(code?: number, reason?: string): void {
    this.#ws.close(code, reason);
  }

  #message(ev: MessageEvent): void {
    if (!this.#held) return void this.onmessage?.(ev);
    this.#held.push(ev);
    this.#text += new TextDecoder().decode(ev.data as ArrayBuffer);
    const info = INFO_LINE.exec(this.#text);
    // Not an INFO yet: wait for more, but never hold a stream that is not NATS (nats.js then fails it).
    if (!info) return void (this.#text.length > 65_536 && this.#release());
    let nonce: unknown;
    try {
      nonce = JSON.parse(info[1]!).nonce;
    } catch {
      nonce = undefined;
    }
    const ready = typeof nonce === "string" ? this.#sign(nonce) : Promise.resolve();
    void ready.then(
      () => this.#release(),
      () => this.#release(),
    );
  }

  #release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const ev of held) this.onmessage?.(ev);
  }
}
