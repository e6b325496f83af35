// Package flagenv reads the environment variables the commands take as
// their flags' defaults (Calico's names: FELIX_*, TYPHA_*,
// ENABLED_CONTROLLERS, ...).
package flagenv

import "os"

// Or is the variable name's value, else def: a variable set to "" counts as
// not set. A flag given on the command line wins over both.
func Or(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
