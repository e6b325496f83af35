// Package deploy holds tortie's Kubernetes manifest, tortie.yaml (the
// counterpart of Calico's etcd manifest; docs/kubernetes.md), and its
// tests: every document a known kind that decodes strictly, the images the
// ones `make images` writes, every reference (ConfigMap keys, Secret,
// ServiceAccounts, roles) to an object of the manifest; and against a real
// kube-apiserver, a server-side dry run, a real apply, and the
// ServiceAccounts' rights, each granted and nothing more.
package deploy

import _ "embed"

// Manifest is tortie.yaml.
//
//go:embed tortie.yaml
var Manifest []byte
