package datastore

import "testing"

func TestNextPageSize(t *testing.T) {
	for _, tc := range []struct {
		keys, bytes int
		want        int64
	}{
		{0, 0, listPageSize},                    // the first page
		{2000, 2000 * 600, listPageBytes / 600}, // endpoints of ~600 bytes: ~7,000
		{2000, 2000 * 100_000, listPageSize},    // large values: never below the first page's size
		{2000, 2000 * 10, listPageMax},          // tiny values: at most listPageMax
		{100, 0, listPageSize},                  // keys without bytes cannot happen; no division by zero
		{3, 2, listPageMax},                     // a mean under one byte counts as one
	} {
		if got := nextPageSize(tc.keys, tc.bytes); got != tc.want {
			t.Errorf("nextPageSize(%d, %d) = %d, want %d", tc.keys, tc.bytes, got, tc.want)
		}
	}
}
