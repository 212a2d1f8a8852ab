// Type declarations for wsgate.js, the VitalStream WebSocket client that
// reconnects and resumes streams by itself. Contract: docs/PROTOCOL.md, section 11.

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

/** A JSON value as published: delivered to subscribers byte for byte. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Anything the constructor can be given for WebSocket: the browser's, or
 * the `ws` package's in Node. */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate?(): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** Sent as access_token; a function is called again before every
   * reconnect and before the token's exp (then sent with {"type":"auth"}). */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket constructor (Node: the `ws` package's). Default: globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Full-jitter exponential backoff between reconnects. Default 250 / 30000 ms. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Send an application ping when nothing was received for this long. Default 15000. */
  pingIntervalMs?: number;
  /** Presume the connection dead when nothing arrives this long after a ping. Default 10000. */
  pongTimeoutMs?: number;
  /** Give up on a connection attempt after this long. Default 10000. */
  connectTimeoutMs?: number;
  /** A publish not acknowledged within this long rejects. Default 10000. */
  publishTimeoutMs?: number;
  /** Publishes held while disconnected; beyond, publish rejects "unavailable". Default 1000. */
  maxQueuedPublishes?: number;
}

export interface StreamMessage {
  stream: string;
  seq: number;
  /** When the gateway accepted it, ms since the Unix epoch. */
  ts: number;
  data: Json;
}

export interface SubscribeOptions {
  /** Resume after this seq (with `epoch`, the stream's epoch it belongs to). */
  since?: number;
  epoch?: string;
  /** Each seq at most once, in increasing order. */
  onMessage?: (m: StreamMessage) => void;
  /** seqs from..to can no longer be replayed: they will never be delivered. */
  onGap?: (g: { stream: string; from: number; to: number }) => void;
  /** The stream's epoch changed: positions before are void; seqs of the new
   * epoch follow (every one delivered or announced by onGap). */
  onReset?: (r: { stream: string; epoch: string }) => void;
}

export interface Subscription {
  readonly stream: string;
  /** The last seq accounted for (delivered or announced by onGap); null before the first reply. */
  readonly seq: number | null;
  /** The epoch `seq` belongs to; null before the first reply. */
  readonly epoch: string | null;
  unsubscribe(): void;
}

/** Codes: the server's (bad_request, unauthorized, forbidden, too_large,
 * rate_limited, capacity, unavailable, internal) and the client's own:
 * outcome_unknown (the connection broke, or no ack came in time, after the
 * publish was sent: it may or may not have been accepted), closed,
 * protocol_error (closed 1002/1003/1007: not reconnecting), policy (closed
 * 1008), token (the token function failed), bad_url. */
export class WsgateError extends Error {
  readonly code: string;
  readonly stream?: string;
  readonly closeCode?: number;
}

export class WsgateClient {
  constructor(url: string | string[], options?: ClientOptions);
  readonly state: ClientState | null;
  readonly stats: { connects: number; reconnects: number; resyncs: number; tokenRefreshes: number };
  on(event: "state", fn: (s: ClientState) => void): () => void;
  on(event: "error", fn: (e: WsgateError) => void): () => void;
  off(event: "state" | "error", fn: (...args: any[]) => void): void;
  subscribe(stream: string, options?: SubscribeOptions): Subscription;
  /** Resolves on the server's ack; rejects with a WsgateError ({code}). */
  publish(stream: string, data: Json): Promise<{ stream: string; seq: number }>;
  close(): void;
}
