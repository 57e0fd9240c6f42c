// Package config loads the dispatcher's settings from the environment, with
// the defaults in one place and one clear error per bad variable.
package config
