// Package receive is the notifier's HTTP side: it accepts signed order.paid
// webhooks, proves they are genuine, drops the ones already handled and
// hands the rest to the NOTIFICATIONS stream before it answers 200.
package receive
