package lab

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// answer is what one scripted try of a probe says.
type answer struct {
	connected bool
	detail    string
	err       error
}

var errNoNetns = errors.New("no such network namespace")

// TestRetryTimeouts: only a try that timed out is retried, with twice the
// timeout, up to probeTries tries; a definite answer or an error counts at
// once; the detail says on which try when more than one was made.
func TestRetryTimeouts(t *testing.T) {
	timeout := answer{detail: timedOut}
	connected := answer{connected: true}
	for _, c := range []struct {
		name      string
		timeout   time.Duration
		answers   []answer
		connected bool
		detail    string
		err       error
		timeouts  []time.Duration // of the tries made
	}{
		{"connected at once", time.Second, []answer{connected}, true, "", nil,
			[]time.Duration{time.Second}},
		{"refused at once", time.Second, []answer{{detail: "refused"}}, false, "refused", nil,
			[]time.Duration{time.Second}},
		{"unreachable at once", time.Second, []answer{{detail: "unreachable"}}, false, "unreachable", nil,
			[]time.Duration{time.Second}},
		{"reset at once", time.Second, []answer{{detail: "read: connection reset by peer"}}, false, "read: connection reset by peer", nil,
			[]time.Duration{time.Second}},
		{"error at once", time.Second, []answer{{err: errNoNetns}}, false, "", errNoNetns,
			[]time.Duration{time.Second}},
		{"connected on the second try", time.Second, []answer{timeout, connected}, true,
			"connected on try 2 of 3 (timed out after 1s)", nil,
			[]time.Duration{time.Second, 2 * time.Second}},
		{"connected on the last try", time.Second, []answer{timeout, timeout, connected}, true,
			"connected on try 3 of 3 (timed out after 1s, 2s)", nil,
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{"refused on a retry", time.Second, []answer{timeout, {detail: "refused"}}, false,
			"refused on try 2 of 3 (timed out after 1s)", nil,
			[]time.Duration{time.Second, 2 * time.Second}},
		{"error on a retry", time.Second, []answer{timeout, {err: errNoNetns}}, false, "", errNoNetns,
			[]time.Duration{time.Second, 2 * time.Second}},
		{"silent on every try: blocked", time.Second, []answer{timeout, timeout, timeout}, false,
			"timeout on all 3 tries (1s, 2s, 4s)", nil,
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{"the timeout doubles from the one given", 300 * time.Millisecond, []answer{timeout, timeout, timeout}, false,
			"timeout on all 3 tries (300ms, 600ms, 1.2s)", nil,
			[]time.Duration{300 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond}},
		{"no timeout: the default", 0, []answer{timeout, connected}, true,
			"connected on try 2 of 3 (timed out after 1s)", nil,
			[]time.Duration{DefaultProbeTimeout, 2 * DefaultProbeTimeout}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []time.Duration
			ok, detail, err := retryTimeouts(context.Background(), c.timeout, func(timeout time.Duration) (bool, string, error) {
				got = append(got, timeout)
				if len(got) > len(c.answers) {
					t.Fatalf("try %d (timeout %v): the script has %d", len(got), timeout, len(c.answers))
				}
				a := c.answers[len(got)-1]
				return a.connected, a.detail, a.err
			})
			if ok != c.connected || detail != c.detail || !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
				t.Errorf("got %v %q %v, want %v %q %v", ok, detail, err, c.connected, c.detail, c.err)
			}
			if !reflect.DeepEqual(got, c.timeouts) {
				t.Errorf("tries with timeouts %v, want %v", got, c.timeouts)
			}
		})
	}
}

// TestRetryTimeoutsInterrupted: a probe whose ctx ended while a try timed
// out is interrupted, not retried and not blocked.
func TestRetryTimeoutsInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	ok, detail, err := retryTimeouts(ctx, time.Second, func(time.Duration) (bool, string, error) {
		tries++
		cancel()
		return false, timedOut, nil
	})
	if ok || detail != "" || !errors.Is(err, ErrInterrupted) || tries != 1 {
		t.Errorf("got %v %q %v after %d tries, want an interrupted probe after 1", ok, detail, err, tries)
	}
}

// TestProbeAllRetriesConcurrently: the silent flows of a matrix are
// retried together, at most parallel at a time, not one after another;
// every flow ends with the answer of its own tries.
func TestProbeAllRetriesConcurrently(t *testing.T) {
	const parallel, flows = 8, 20
	var jobs []Result
	for i := range flows {
		port := 80 // silent on every try
		switch i % 4 {
		case 1:
			port = 81 // connects on the second try
		case 2:
			port = 82 // refused at once
		}
		jobs = append(jobs, Result{From: fmt.Sprintf("w%d", i), To: "db", Port: port, Protocol: "tcp"})
	}
	var mu sync.Mutex
	inFlight, peak, retrying, peakRetrying, tries := 0, 0, 0, 0, 0
	const base = 10 * time.Millisecond
	// A try takes its whole timeout when silent (as a dropped flow does),
	// and some of it when answered.
	try := func(j Result, n *int) func(time.Duration) (bool, string, error) {
		return func(timeout time.Duration) (bool, string, error) {
			*n++
			retry := *n > 1
			mu.Lock()
			tries++
			inFlight++
			peak = max(peak, inFlight)
			if retry {
				retrying++
				peakRetrying = max(peakRetrying, retrying)
			}
			mu.Unlock()
			defer func() {
				mu.Lock()
				inFlight--
				if retry {
					retrying--
				}
				mu.Unlock()
			}()
			switch {
			case j.Port == 82:
				time.Sleep(timeout / 4)
				return false, "refused", nil
			case j.Port == 81 && *n == 2:
				time.Sleep(timeout / 4)
				return true, "", nil
			}
			time.Sleep(timeout)
			return false, timedOut, nil
		}
	}
	errs := probeAll(context.Background(), jobs, parallel, func(j Result) (Result, error) {
		n := 0
		var err error
		j.Connected, j.Detail, err = retryTimeouts(context.Background(), base, try(j, &n))
		return j, err
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := map[int]Result{
		80: {Connected: false, Detail: "timeout on all 3 tries (10ms, 20ms, 40ms)"},
		81: {Connected: true, Detail: "connected on try 2 of 3 (timed out after 10ms)"},
		82: {Connected: false, Detail: "refused"},
	}
	wantTries := 0
	for _, j := range jobs {
		w := want[j.Port]
		if j.Connected != w.Connected || j.Detail != w.Detail {
			t.Errorf("%s → %s %s/%d: %v %q, want %v %q", j.From, j.To, j.Protocol, j.Port, j.Connected, j.Detail, w.Connected, w.Detail)
		}
		wantTries += map[int]int{80: 3, 81: 2, 82: 1}[j.Port]
	}
	if tries != wantTries {
		t.Errorf("%d tries in all, want %d", tries, wantTries)
	}
	if peak > parallel {
		t.Errorf("%d tries at a time, want at most %d", peak, parallel)
	}
	// 15 flows are retried, each retry lasting 20 ms or more: one after
	// another, no two would overlap.
	if peakRetrying < 2 {
		t.Errorf("at most %d retries at a time: retries are made one after another", peakRetrying)
	}
}
