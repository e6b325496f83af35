package selector

import "testing"

const benchSelector = `app == "web" && tier in {"a","b","c"} && has(role) && !has(debug) && env != "dev"`

var benchLabels = map[string]string{
	"app": "web", "tier": "b", "role": "frontend", "env": "prod",
	"projectcalico.org/namespace": "default", "version": "v1",
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(benchSelector); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	s := MustParse(benchSelector)
	if !s.Evaluate(benchLabels) {
		b.Fatal("benchmark selector should match")
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Evaluate(benchLabels)
	}
}

func BenchmarkUniqueID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		MustParse(benchSelector).UniqueID()
	}
}
