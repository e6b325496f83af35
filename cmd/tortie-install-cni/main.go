// Command tortie-install-cni installs tortie's CNI plugin on a Kubernetes
// node: the tortie-node DaemonSet's init container, in the tortie/cni
// image, as Calico's install-cni. It copies tortie-cni into the host's CNI
// binary directory as tortie and tortie-ipam, the etcd TLS files next to
// the network configuration, writes the plugin's kubeconfig and the conflist
// from the CNI_NETWORK_CONFIG template, and exits. Configured by the
// environment only (see pkg/installcni and docs/kubernetes.md):
//
//	CNI_NETWORK_CONFIG, CNI_NETWORK_CONFIG_FILE   the conflist template (default: tortie's)
//	CNI_CONF_NAME                                 its file name (10-tortie.conflist)
//	CNI_DEST_BIN_DIR, CNI_DEST_NET_DIR            the host's directories as mounted (/host/opt/cni/bin, /host/etc/cni/net.d)
//	CNI_NET_DIR                                   the configuration directory as the host sees it (/etc/cni/net.d)
//	CNI_PLUGIN_BINARY                             the plugin (tortie-cni next to this program)
//	UPDATE_CNI_BINARIES                           false: keep installed binaries (true)
//	CNI_MTU, KUBERNETES_NODE_NAME, LOG_LEVEL, LOG_FILE_PATH, LOG_FILE_MAX_SIZE/AGE/COUNT,
//	DATASTORE_TYPE, ETCD_ENDPOINTS                the placeholders' values
//	ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE  TLS files to copy to <net dir>/tortie-tls
//	CNI_SERVICE_ACCOUNT                           the account whose token the plugin's kubeconfig holds (the pod's own if unset)
//	CNI_TOKEN_EXPIRATION_SECONDS                  that token's lifetime (a year)
//	KUBECONFIG_FILENAME                           the kubeconfig's name (tortie-kubeconfig)
package main

import (
	"fmt"
	"os"

	"github.com/tortie/tortie/pkg/installcni"
	"github.com/tortie/tortie/pkg/version"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "--version", "version":
			v := version.Get()
			fmt.Printf("tortie-install-cni %s %s\n", v.Version, v.Commit)
			return
		default:
			fmt.Fprintf(os.Stderr, "tortie-install-cni takes no arguments (configured by its environment: see docs/kubernetes.md); got %q\n", os.Args[1:])
			os.Exit(2)
		}
	}
	self, err := os.Executable()
	if err == nil {
		var c installcni.Config
		c, err = installcni.FromEnv(os.Getenv, self)
		if err == nil {
			c.Out = os.Stdout
			err = installcni.Install(c)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tortie-install-cni: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("tortie-install-cni: done")
}
