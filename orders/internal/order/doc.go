// Package order takes an order from request to paid event: it validates the
// request, fixes the order and event ids, takes the payment, publishes
// order.paid and records the order, so that a retried request never yields
// a second event.
package order
