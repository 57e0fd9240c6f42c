// Package admin serves the dispatcher's admin API under /v1: the
// subscriptions (create, list, get, patch with ETag and If-Match, delete,
// enable, disable) and their secrets (read, rotate with a grace period).
// Every request needs Authorization: Bearer <ADMIN_TOKEN>; bodies are
// strict JSON of at most 64 KiB; every refusal is problem+json and
// changes nothing. Deps holds what the handlers need, each behind a small
// interface, so that further endpoints (ping, attempts, dead letters,
// replay, recovery jobs) slot in beside these.
package admin
