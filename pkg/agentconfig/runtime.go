package agentconfig

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
)

// runtimeFields are the settings of the Go runtime, applied by
// ApplyRuntime when the agent starts and whenever they change.
var runtimeFields = []string{"goGCThreshold", "goMemoryLimitMB", "goMaxProcs"}

// runtimeEnv is the Go runtime's own variable for each runtime field: when
// it is set, the runtime has read it and it wins over every layer, as in
// Felix.
var runtimeEnv = map[string]string{"goGCThreshold": "GOGC", "goMemoryLimitMB": "GOMEMLIMIT", "goMaxProcs": "GOMAXPROCS"}

// ApplyRuntime sets the Go runtime's garbage collection threshold, soft
// memory limit and CPU count from s, except each one whose Go variable
// (GOGC, GOMEMLIMIT, GOMAXPROCS) is set in env (os.Environ's form). It
// returns what it did, "field=value" or "field: VAR set", for the log.
func ApplyRuntime(s Settings, env []string) []string {
	var out []string
	for _, f := range runtimeFields {
		if v := lookupEnv(env, runtimeEnv[f]); v != "" {
			out = append(out, fmt.Sprintf("%s: %s=%s set", f, runtimeEnv[f], v))
			continue
		}
		switch f {
		case "goGCThreshold":
			debug.SetGCPercent(s.GoGCThreshold)
			out = append(out, fmt.Sprintf("%s=%d", f, s.GoGCThreshold))
		case "goMemoryLimitMB":
			limit := int64(math.MaxInt64)
			if s.GoMemoryLimitMB > 0 {
				limit = int64(s.GoMemoryLimitMB) << 20
			}
			debug.SetMemoryLimit(limit)
			out = append(out, fmt.Sprintf("%s=%d", f, s.GoMemoryLimitMB))
		case "goMaxProcs":
			if s.GoMaxProcs > 0 {
				runtime.GOMAXPROCS(s.GoMaxProcs)
			} else {
				runtime.SetDefaultGOMAXPROCS()
			}
			out = append(out, fmt.Sprintf("%s=%d (GOMAXPROCS %d)", f, s.GoMaxProcs, runtime.GOMAXPROCS(0)))
		}
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
	return s.GoGCThreshold != o.GoGCThreshold || s.GoMemoryLimitMB != o.GoMemoryLimitMB || s.GoMaxProcs != o.GoMaxProcs
}
