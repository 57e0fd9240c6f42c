// Package event defines the versioned event contracts: order.paid, the
// JSON body that is stored in the ORDERS stream and posted, byte for byte,
// as the webhook, and webhook.test, the dispatcher's ping of an endpoint.
package event
