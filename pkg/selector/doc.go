// Package selector implements Calico's label-selector language: it parses
// expressions such as `app == "web" && !has(debug)`, evaluates them against an
// endpoint's labels, and renders them in the canonical form whose hash names
// shared dataplane objects (IP sets, policy chains).
//
// Because selectors decide which traffic network policy allows, this package
// must never accept an expression Calico would reject, never panic on user
// input, never mutate or retain the label maps it is given, and never
// allocate while evaluating: Evaluate runs for every endpoint × selector pair
// on each update, so it sits on the agent's hottest path. Two selectors that
// mean the same thing by construction must print the same canonical string,
// because the unique ID derived from it is persisted and compared across
// processes.
package selector
