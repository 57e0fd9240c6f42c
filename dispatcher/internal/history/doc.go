// Package history reads the dispatcher's logs kept in JetStream streams,
// the attempt log and the dead letters among them: newest-first pages over
// a subject filter, which JetStream cannot iterate backwards by itself,
// and forward scans over a range of sequences, for replays and recovery
// jobs.
package history
