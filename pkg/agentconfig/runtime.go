package agentconfig

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
)

// runtimeField is a setting of the Go runtime: env is the runtime's own
// variable, which the runtime has read when set and which then wins over
// every layer, as in Felix; apply sets it and says what it set.
type runtimeField struct {
	name, env string
	apply     func(s Settings) string
}

// runtimeFields are applied by ApplyRuntime when the agent starts and
// whenever they change.
var runtimeFields = []runtimeField{
	{"goGCThreshold", "GOGC", func(s Settings) string {
		debug.SetGCPercent(s.GoGCThreshold)
		return fmt.Sprint(s.GoGCThreshold)
	}},
	{"goMemoryLimitMB", "GOMEMLIMIT", func(s Settings) string {
		limit := int64(math.MaxInt64)
		if s.GoMemoryLimitMB > 0 {
			limit = int64(s.GoMemoryLimitMB) << 20
		}
		debug.SetMemoryLimit(limit)
		return fmt.Sprint(s.GoMemoryLimitMB)
	}},
	{"goMaxProcs", "GOMAXPROCS", func(s Settings) string {
		if s.GoMaxProcs > 0 {
			runtime.GOMAXPROCS(s.GoMaxProcs)
		} else {
			runtime.SetDefaultGOMAXPROCS()
		}
		return fmt.Sprintf("%d (GOMAXPROCS %d)", s.GoMaxProcs, runtime.GOMAXPROCS(0))
	}},
}

func isRuntimeField(name string) bool {
	return slices.ContainsFunc(runtimeFields, func(f runtimeField) bool { return f.name == name })
}

// ApplyRuntime sets the Go runtime's garbage collection threshold, soft
// memory limit and CPU count from s, except each one whose Go variable
// (GOGC, GOMEMLIMIT, GOMAXPROCS) is set in env (os.Environ's form). It
// returns what it did, "field=value" or "field: VAR set", for the log.
func ApplyRuntime(s Settings, env []string) []string {
	var out []string
	for _, f := range runtimeFields {
		if v := lookupEnv(env, f.env); v != "" {
			out = append(out, fmt.Sprintf("%s: %s=%s set", f.name, f.env, v))
			continue
		}
		out = append(out, f.name+"="+f.apply(s))
	}
	return out
}

// lookupEnv is name's value in env, "" when unset.
func lookupEnv(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// runtimeChanged reports whether a runtime field differs between s and o.
func (s Settings) runtimeChanged(o Settings) bool {
	for _, f := range fields {
		if isRuntimeField(f.name) && f.value(s) != f.value(o) {
			return true
		}
	}
	return false
}
