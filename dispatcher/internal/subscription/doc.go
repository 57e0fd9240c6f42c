// Package subscription is the webhook subscription as the admin API shows
// it and the registry stores it: its fields, their defaults and bounds, its
// id, the event types it may select and the ORDERS subjects they stand
// for, and the strict decoding of the bodies that create or change one.
package subscription
