// Package images builds tortie's container images without a container
// daemon and without the network: each image is a few layers written from
// files on this machine (tortie's static Go binaries, and for tortie/node
// the Debian programs the agent runs, nft and ip, with the shared libraries
// and the dynamic loader they need), put together with go-containerregistry
// and written as an OCI image layout in a tar archive, which containerd
// (`ctr -n k8s.io images import`), skopeo (`oci-archive:`) and crane read.
//
// The images are reproducible: the same files give the same digests. Every
// layer's entries are sorted, owned by root, with a fixed modification time
// (the Unix epoch) and modes reduced to 0755 or 0644 (directories 0755);
// the configuration's creation time is the epoch too; gzip writes no time.
//
// The three images (Specs):
//
//	docker.io/tortie/node              tortie-node (entrypoint), tortie; nft, ip
//	docker.io/tortie/cni               tortie-install-cni (entrypoint), tortie-cni
//	docker.io/tortie/kube-controllers  tortie-kube-controllers (entrypoint)
//
// tagged DefaultTag (the Makefile's IMAGE_TAG), never "latest", so that a
// pod's imagePullPolicy IfNotPresent finds an imported image and never
// pulls. `make images` writes them to bin/images/<name>.tar
// (internal/cmd/tortie-images).
package images
