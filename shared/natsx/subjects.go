package natsx

// DeadletterSubject is where the dead letter of a message on subject goes:
// deadletter.<owner>.<subject>, owner being a subscription id or, for a
// consumer that is not a subscription, the consumer's name. One owner's
// dead letters are one filter away: deadletter.<owner>.>.
func DeadletterSubject(owner, subject string) string {
	return "deadletter." + owner + "." + subject
}
