// Package config loads the notifier's settings from the environment and
// reports every bad variable by name, without ever echoing a secret.
package config
