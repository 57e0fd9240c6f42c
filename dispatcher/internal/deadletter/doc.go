// Package deadletter is the admin API's view of a subscription's dead
// letters in DEADLETTER (subjects deadletter.<subscription id>.<original
// subject>): pages of them, newest first, and their replay, each one
// delivered again through REDELIVERIES to that subscription alone.
package deadletter
