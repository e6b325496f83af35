package apiserver

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// kubeconfig is the part of a kubeconfig file (clientcmd's v1 Config) that
// a token user needs.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthorityData []byte `json:"certificate-authority-data"`
	} `json:"cluster"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		Token string `json:"token"`
	} `json:"user"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

// KubeconfigYAML is a self-contained kubeconfig (the CA inline) for user,
// authenticating with token, talking to server.
func KubeconfigYAML(server string, caPEM []byte, user, token string) ([]byte, error) {
	const name = "tortie"
	kc := kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: name}
	var c namedCluster
	c.Name = name
	c.Cluster.Server = server
	c.Cluster.CertificateAuthorityData = caPEM
	var u namedUser
	u.Name = user
	u.User.Token = token
	var x namedContext
	x.Name = name
	x.Context.Cluster = name
	x.Context.User = user
	kc.Clusters = []namedCluster{c}
	kc.Users = []namedUser{u}
	kc.Contexts = []namedContext{x}
	b, err := yaml.Marshal(kc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return b, nil
}
