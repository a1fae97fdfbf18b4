// Page code of the browser test. It talks grpc-web to the edge named by the
// page's `edge` query parameter (for example `/?edge=http://127.0.0.1:8080`)
// and exposes `window.valora`, whose async functions run.mjs calls through
// Playwright. No function throws: each returns a plain, JSON-serializable
// result, so that a failed call becomes data for the Rust test to assert on.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  ListingEventType,
  MarketplaceService,
} from "../../../proto/gen/ts/valora/marketplace/v1/marketplace_pb";

/** Outcome of a call that failed, as the page saw it. */
interface CallFailure {
  ok: false;
  /** Name of the gRPC status code in Connect's `Code` enum, such as "NotFound". */
  code: string;
  /** The status message without Connect's "[code]" prefix. */
  message: string;
  /** Type names of the error details, such as "google.rpc.BadRequest". */
  detailTypes: string[];
  /** Response headers and trailers that CORS let the page read. */
  metadata: Record<string, string>;
  /** The underlying error, such as fetch's TypeError when CORS blocks a call. */
  cause: string | null;
}

type Result<T> = ({ ok: true } & T) | CallFailure;

/** One message of WatchListingEvents and when it reached the page. */
interface ReceivedEvent {
  eventId: string;
  type: string;
  listingId: string;
  /** Milliseconds since the Unix epoch, fractional, from `now()`. */
  arrivedAt: number;
}

/** How the watch stream ended: `ok` when the server closed it cleanly. */
type StreamEnd = ({ ok: true } | CallFailure) & { at: number };

const edge = new URLSearchParams(location.search).get("edge");
if (!edge) {
  throw new Error("missing query parameter: edge, the edge's base URL such as http://127.0.0.1:8080");
}

const client = createClient(
  MarketplaceService,
  createGrpcWebTransport({ baseUrl: edge, useBinaryFormat: true }),
);

/** Timeout of each unary call, sent to the edge as grpc-timeout. */
const UNARY_TIMEOUT_MS = 10_000;

/** Wall-clock time in fractional milliseconds since the Unix epoch. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

function keyHeaders(key: string): Record<string, string> {
  return { "x-api-key": key };
}

function failure(error: unknown): CallFailure {
  const connectError = ConnectError.from(error);
  const metadata: Record<string, string> = {};
  connectError.metadata.forEach((value, name) => {
    metadata[name] = value;
  });
  return {
    ok: false,
    code: Code[connectError.code] ?? String(connectError.code),
    message: connectError.rawMessage,
    detailTypes: connectError.details.map((detail) =>
      "type" in detail ? detail.type : detail.desc.typeName,
    ),
    metadata,
    cause: connectError.cause === undefined ? null : String(connectError.cause),
  };
}

async function listListings(key: string, query = ""): Promise<Result<{ ids: string[]; titles: string[] }>> {
  try {
    const response = await client.listListings(
      { pageSize: 100, query },
      { headers: keyHeaders(key), timeoutMs: UNARY_TIMEOUT_MS },
    );
    return {
      ok: true,
      ids: response.listings.map((listing) => listing.id),
      titles: response.listings.map((listing) => listing.title),
    };
  } catch (error) {
    return failure(error);
  }
}

async function createListing(
  key: string,
  title: string,
): Promise<Result<{ id: string; title: string; requestedAt: number; respondedAt: number }>> {
  const requestedAt = now();
  try {
    const response = await client.createListing(
      {
        title,
        description: "Created by the browser test",
        category: "browser-test",
        price: { currencyCode: "EUR", amountMinor: 1250n },
      },
      { headers: keyHeaders(key), timeoutMs: UNARY_TIMEOUT_MS },
    );
    const listing = response.listing;
    if (!listing) {
      return failure(new ConnectError("CreateListing returned no listing", Code.Internal));
    }
    return { ok: true, id: listing.id, title: listing.title, requestedAt, respondedAt: now() };
  } catch (error) {
    return failure(error);
  }
}

async function getListing(key: string, id: string): Promise<Result<{ id: string }>> {
  try {
    const response = await client.getListing({ id }, { headers: keyHeaders(key), timeoutMs: UNARY_TIMEOUT_MS });
    return { ok: true, id: response.listing?.id ?? "" };
  } catch (error) {
    return failure(error);
  }
}

/** State of the one WatchListingEvents stream a page runs at a time. */
const watch = {
  controller: null as AbortController | null,
  events: [] as ReceivedEvent[],
  openedAt: null as number | null,
  end: null as StreamEnd | null,
  done: null as Promise<void> | null,
};

/**
 * Starts WatchListingEvents, after cancelling a stream this page still
 * runs, and resolves once the response headers arrived (the server has
 * subscribed), the stream ended, or `openTimeoutMs` passed.
 */
async function startWatch(
  key: string,
  openTimeoutMs = 10_000,
): Promise<{ opened: boolean; openedAt: number | null; end: StreamEnd | null }> {
  if (watch.controller) {
    await stopWatch();
  }
  const controller = new AbortController();
  watch.controller = controller;
  watch.events = [];
  watch.openedAt = null;
  watch.end = null;

  let markOpened: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    markOpened = resolve;
  });
  watch.done = (async () => {
    try {
      const stream = client.watchListingEvents(
        {},
        {
          headers: keyHeaders(key),
          signal: controller.signal,
          onHeader: () => {
            watch.openedAt = now();
            markOpened();
          },
        },
      );
      for await (const message of stream) {
        watch.events.push({
          eventId: message.eventId,
          type: ListingEventType[message.type] ?? String(message.type),
          listingId: message.listing?.id ?? "",
          arrivedAt: now(),
        });
      }
      watch.end = { ok: true, at: now() };
    } catch (error) {
      watch.end = { ...failure(error), at: now() };
    } finally {
      markOpened();
    }
  })();

  const timeout = new Promise<void>((resolve) => setTimeout(resolve, openTimeoutMs));
  await Promise.race([opened, timeout]);
  return { opened: watch.openedAt !== null, openedAt: watch.openedAt, end: watch.end };
}

/** Returns the events received so far and how the stream ended; run.mjs polls it. */
function watchEvents(): { events: ReceivedEvent[]; end: StreamEnd | null } {
  return { events: watch.events, end: watch.end };
}

/** Cancels the stream and returns everything it delivered. */
async function stopWatch(): Promise<{ stoppedAt: number; events: ReceivedEvent[]; end: StreamEnd | null }> {
  const stoppedAt = now();
  watch.controller?.abort();
  await watch.done;
  watch.controller = null;
  return { stoppedAt, events: watch.events, end: watch.end };
}

declare global {
  interface Window {
    valora: {
      edge: string;
      listListings: typeof listListings;
      createListing: typeof createListing;
      getListing: typeof getListing;
      startWatch: typeof startWatch;
      watchEvents: typeof watchEvents;
      stopWatch: typeof stopWatch;
    };
  }
}

window.valora = { edge, listListings, createListing, getListing, startWatch, watchEvents, stopWatch };
document.getElementById("status")!.textContent = `ready: edge ${edge}`;
