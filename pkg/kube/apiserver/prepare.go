package apiserver

import "errors"

// Prepared is a kube-apiserver made ready to run by a caller that starts
// and supervises the process itself: the lab, which records every process
// it starts (PID and start time) in its state file before it waits for it,
// so that a crash of `tortie lab up` at any point leaves nothing `tortie
// lab down` would not find.
type Prepared struct {
	// Config is the configuration, defaulted, with the port chosen.
	Config Config
	// Argv is the command line (Argv[0] the binary).
	Argv []string
	// URL is the server's address for clients.
	URL string
	// AdminKubeconfig is the admin's kubeconfig file (system:masters).
	AdminKubeconfig string
	// Kubeconfigs are every user's kubeconfig file, by user name.
	Kubeconfigs map[string]string
	// CACertFile is the CA's certificate (PEM).
	CACertFile string
	// Users have static tokens, the admin first.
	Users []User
	// LogFile is where Start would send the server's output.
	LogFile string
}

// Prepare does what Start does before it runs the binary: defaults and
// checks cfg, writes (or reuses) the PKI, the token file and every user's
// kubeconfig in cfg.Dir, and returns the command line. Port 0 picks a port
// free now (a caller that can retry on another port when the server
// cannot bind it should pick its own). Readiness is /readyz answering 200
// to the admin's token.
func Prepare(cfg Config) (*Prepared, error) {
	if cfg.Log != nil {
		return nil, errors.New("kube-apiserver config: Log: not used by Prepare (the caller runs the process)")
	}
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.setPort(s.cfg.Port == 0); err != nil {
		return nil, err
	}
	p := &Prepared{Config: s.cfg, Argv: append([]string(nil), s.argv...), URL: s.url,
		AdminKubeconfig: s.AdminKubeconfig(), Kubeconfigs: map[string]string{}, CACertFile: s.CACertFile(),
		Users: s.Users(), LogFile: s.LogFile()}
	for _, u := range s.users {
		p.Kubeconfigs[u.Name] = s.kubeconfigPath(u.Name)
	}
	return p, nil
}
