// Package apiserver runs a real kube-apiserver (built from k8s.io/kubernetes
// at Version by scripts/build-kubernetes.sh) as a child process: the
// Kubernetes control plane of tortie's tests and of the lab.
//
// Start writes everything the server needs under Config.Dir, in Go: a CA,
// the serving certificate, the service-account signing key pair, a static
// token file (an admin in system:masters and any Config.Users) and
// kubeconfig files. All of it is reused when already there, so a server
// started again on the same Dir (Restart, or a later Start) keeps its
// clients' credentials valid.
//
// Layout of Dir:
//
//	pki/ca.crt, pki/ca.key                 the cluster CA (also the client CA)
//	pki/apiserver.crt, pki/apiserver.key   the serving certificate
//	pki/sa.key, pki/sa.pub                 service-account token signing
//	tokens.csv                             --token-auth-file (0600)
//	kubeconfig/<user>.kubeconfig           one per user, admin first
//	kube-apiserver.log                     the server's output, appended
//
// kube-apiserver reads the token file only when it starts: users must be
// known before Start (or added for a Restart).
//
// Authorization is Node,RBAC. A test runs a component with exactly a
// ServiceAccount's permissions through ImpersonatingConfig (admin
// credentials asking to act as the account), which RBAC judges as it would
// the account's own token.
package apiserver
