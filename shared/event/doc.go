// Package event defines the versioned order.paid contract: the JSON body
// that is stored in the ORDERS stream and posted, byte for byte, as the
// webhook.
package event
