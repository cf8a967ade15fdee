/**
 * A tiny method + path router: `/v1/rooms/:id` patterns, params decoded once, and a
 * 405 (with `allow`) when the path exists under another method.
 */
export interface RouteMatch<R> {
  route: R;
  params: Record<string, string>;
}

interface Compiled<R> {
  method: string;
  parts: string[];
  route: R;
}

export class Router<R extends { method: string; path: string }> {
  readonly #routes: Compiled<R>[] = [];

  constructor(routes: readonly R[]) {
    for (const route of routes)
      this.#routes.push({ method: route.method, parts: route.path.split("/").slice(1), route });
  }

  /** A route, "method" when only the method is wrong (with the allowed ones), or undefined. */
  match(method: string, pathname: string): RouteMatch<R> | { allow: string[] } | undefined {
    const segments = pathname.split("/").slice(1);
    const allow: string[] = [];
    for (const c of this.#routes) {
      const params = matchParts(c.parts, segments);
      if (!params) continue;
      if (c.method === method || (method === "HEAD" && c.method === "GET")) return { route: c.route, params };
      allow.push(c.method);
    }
    return allow.length ? { allow } : undefined;
  }
}

function matchParts(parts: string[], segments: string[]): Record<string, string> | undefined {
  if (parts.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    const seg = segments[i]!;
    if (part.startsWith(":")) {
      let value: string;
      try {
        value = decodeURIComponent(seg);
      } catch {
        return undefined;
      }
      if (value === "") return undefined;
      params[part.slice(1)] = value;
    } else if (part !== seg) {
      return undefined;
    }
  }
  return params;
}
