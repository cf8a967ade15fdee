/**
 * Prometheus metrics of one bus. Each bus has its own registry (several buses can live
 * in one process, as in tests); prom-client is the maintained Prometheus client.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Store } from "../store/index.ts";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class BusMetrics {
  readonly registry = new Registry();
  readonly calloutDecisions = new Counter({
    name: "unibus_callout_decisions_total",
    help: "Auth callout decisions by result (admit, deny) and reason",
    labelNames: ["result", "reason"] as const,
    registers: [this.registry],
  });
  readonly calloutLatency = new Histogram({
    name: "unibus_callout_decision_seconds",
    help: "Time from an authorization request to the callout's answer",
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly kicks = new Counter({
    name: "unibus_kicks_total",
    help: "Connections forced to re-authenticate or closed after a membership or allowlist change",
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: "unibus_nats_connections",
    help: "Client connections on this node's nats-server (read from its monitoring endpoint at scrape time)",
    registers: [this.registry],
  });
  readonly httpRequests = new Counter({
    name: "unibus_http_requests_total",
    help: "Control-plane requests by route and status",
    labelNames: ["route", "status"] as const,
    registers: [this.registry],
  });
  readonly httpLatency = new Histogram({
    name: "unibus_http_request_seconds",
    help: "Control-plane request latency by route",
    labelNames: ["route"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly httpRejections = new Counter({
    name: "unibus_http_rejections_total",
    help: "Requests refused before authentication: rate_limit, body_limit, inflight_limit",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly nonceCacheSize = new Gauge({
    name: "unibus_nonce_cache_entries",
    help: "Entries in the control plane's replay (nonce) cache",
    registers: [this.registry],
  });
  readonly storeLatency = new Histogram({
    name: "unibus_store_operation_seconds",
    help: "Store operation latency by operation and backend",
    labelNames: ["op", "backend"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: "unibus_store_errors_total",
    help: "Store operations that failed with an unavailable store (not NotFound or validation)",
    labelNames: ["op", "backend"] as const,
    registers: [this.registry],
  });

  readonly natsRestarts = new Counter({
    name: "unibus_nats_restarts_total",
    help: "Supervised restarts of this node's nats-server after it ended on its own",
    labelNames: ["node"] as const,
    registers: [this.registry],
  });
  readonly natsLastExit = new Gauge({
    name: "unibus_nats_last_exit_timestamp_seconds",
    help: "When this node's nats-server last ended on its own (Unix time), labelled with how it ended",
    labelNames: ["node", "reason"] as const,
    registers: [this.registry],
  });
  readonly partUp = new Gauge({
    name: "unibus_part_up",
    help: "1 while a part of this node works (nats, callout, kicker, streams, store, replay, storage), 0 while it is down",
    labelNames: ["part"] as const,
    registers: [this.registry],
  });

  constructor() {
    this.registry.setContentType(Registry.PROMETHEUS_CONTENT_TYPE);
  }

  /** Prometheus text exposition. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * Wraps a store so every async method is timed and unavailability is counted. Domain
 * errors (NotFound, UserExists, …) are outcomes, not store errors.
 */
export function instrumentStore<S extends Store>(store: S, metrics: BusMetrics): S {
  // One timing wrapper (and one labels object) per method, made on first use and kept
  // while the method underneath is the same function, instead of a closure and a labels
  // object on every call.
  const wrapped = new Map<string, { method: unknown; wrapper: (...args: unknown[]) => unknown }>();
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || typeof prop !== "string" || prop === "constructor") return value;
      const hit = wrapped.get(prop);
      if (hit?.method === value) return hit.wrapper;
      const labels = { op: prop, backend: target.backend };
      const wrapper = (...args: unknown[]) => {
        const started = performance.now();
        const result = value.apply(target, args);
        if (!(result instanceof Promise)) return result;
        return result.then(
          (v) => {
            metrics.storeLatency.observe(labels, (performance.now() - started) / 1000);
            return v;
          },
          (err: unknown) => {
            metrics.storeLatency.observe(labels, (performance.now() - started) / 1000);
            if ((err as { code?: string })?.code === "STORE_UNAVAILABLE") metrics.storeErrors.inc(labels);
            throw err;
          },
        );
      };
      wrapped.set(prop, { method: value, wrapper });
      return wrapper;
    },
  });
}
