// Package config reads settings from the environment with one clear error
// per bad variable; each service's own config package builds on it.
package config
