// Package bench measures the whole pipeline on one machine: it builds the
// orders, dispatcher and notifier binaries and a nats-server, runs them as
// separate processes on 127.0.0.1 with an in-process SMTP relay, drives
// POST /orders at a set concurrency (closed loop) or at a fixed rate (open
// loop), and prints one table of throughput, latency, peak memory and the
// ceilings measured in the same run: a bare Fiber handler, raw JetStream
// publishes with their PubAck, and raw webhook POSTs to the notifier.
//
// The services are black boxes configured by their environment; extra
// variables can be passed to each, so that new settings can be measured
// without changing the tool. Every phase is bounded in count and in time,
// and every process the tool starts is stopped by its pid.
//
// Benchmarks are measurements, not tests: nothing here asserts a timing.
package bench
