package datastore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"sigs.k8s.io/yaml"
)

// DefaultConfigFile is tortie's datastore config file, in the format of
// calicoctl's /etc/calico/calicoctl.cfg. `tortie lab up` writes it.
const DefaultConfigFile = "/etc/tortie/tortie.cfg"

// CalicoConfigFile is calicoctl's config file. It is read when no config
// file is named and tortie's own (DefaultConfigFile) does not exist, so that
// a host set up for calicoctl needs nothing more.
const CalicoConfigFile = "/etc/calico/calicoctl.cfg"

// SupportedType is the one datastore type tortie has (Calico's name).
const SupportedType = "etcdv3"

// Source is where Resolve found a value.
type Source string

// Sources, in Resolve's order of precedence.
const (
	FromFlag    Source = "flag"    // what the caller was told: a command-line flag, the CNI network config
	FromEnv     Source = "env"     // Calico's environment variables
	FromFile    Source = "file"    // the config file
	FromDefault Source = "default" // none of them said
)

// Origin is where one resolved value came from: its source and, there, the
// flag, the variable or the file.
type Origin struct {
	Source Source
	Name   string
}

// String is what messages say: the flag, the variable, the file's path, or
// "default".
func (o Origin) String() string {
	if o.Source == FromDefault || o.Name == "" {
		return string(FromDefault)
	}
	return o.Name
}

// Flags are the settings a caller was given explicitly: command-line flags,
// or the etcd fields of the CNI network config. An empty field is unset.
type Flags struct {
	Endpoints          string // comma separated
	CertFile, KeyFile  string
	CAFile             string
	Username, Password string
	DatastoreType      string
	// ConfigFile is a config file the caller was told to read (--config);
	// unlike the default one, it must exist.
	ConfigFile string
}

// cliFlagNames are the names Bind gives the flags; messages use them unless
// Sources.FlagNames says otherwise.
var cliFlagNames = Flags{
	Endpoints: "--etcd-endpoints", CertFile: "--etcd-cert", KeyFile: "--etcd-key", CAFile: "--etcd-ca",
	Username: "--etcd-username", Password: "--etcd-password", DatastoreType: "--datastore-type",
	ConfigFile: "--config",
}

// Bind registers the datastore flags every tortie command shares (--config,
// --etcd-endpoints, --etcd-cert, --etcd-key, --etcd-ca) through a flag
// set's StringVar: pflag's or the standard library's.
func (f *Flags) Bind(stringVar func(p *string, name, value, usage string)) {
	stringVar(&f.ConfigFile, "config", "", "datastore config file (calicoctl.cfg format; default "+DefaultConfigFile+" if present, else "+CalicoConfigFile+" if present)")
	stringVar(&f.Endpoints, "etcd-endpoints", "", "comma-separated etcd endpoints (env ETCD_ENDPOINTS)")
	stringVar(&f.CertFile, "etcd-cert", "", "client certificate for etcd TLS (env ETCD_CERT_FILE)")
	stringVar(&f.KeyFile, "etcd-key", "", "client key for etcd TLS (env ETCD_KEY_FILE)")
	stringVar(&f.CAFile, "etcd-ca", "", "CA certificate for etcd TLS (env ETCD_CA_CERT_FILE)")
}

// Sources says where Resolve looks besides the environment.
type Sources struct {
	Flags Flags
	// FlagNames are how messages name each flag; an empty one is Bind's
	// name (the CNI plugin names its network config fields instead).
	FlagNames Flags
	// DefaultConfigFile is read, when it exists, if Flags.ConfigFile is
	// empty (default DefaultConfigFile).
	DefaultConfigFile string
	// FallbackConfigFile is read, when it exists, if Flags.ConfigFile is
	// empty and DefaultConfigFile does not exist (default
	// CalicoConfigFile).
	FallbackConfigFile string
}

// Origins says where each setting of a resolved Config came from. Cert,
// Key and CA are the file or inline PEM, whichever was used.
type Origins struct {
	Endpoints, Cert, Key, CA Origin
	Username, Password       Origin
	DatastoreType            Origin
}

// Resolved is the datastore Resolve found, and where each setting came from.
type Resolved struct {
	// Config is ready for New; the caller sets timeouts and the logger.
	Config  Config
	Origins Origins
	// ConfigFile is the config file that was read or, when none was, the one
	// that would have been.
	ConfigFile     string
	ConfigFileRead bool
	// ConfigFileFallback says ConfigFile is the fallback (calicoctl's),
	// read because the default one does not exist.
	ConfigFileFallback bool

	endpointsFlag string
	defaultFile   string
}

// Resolve finds the datastore. Each setting comes from the first that
// sets it of: the flags, Calico's environment variables (ETCD_ENDPOINTS,
// ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_CA_CERT_FILE, ETCD_USERNAME,
// ETCD_PASSWORD, DATASTORE_TYPE), the config file; the endpoints default to
// DefaultEndpoint. A datastore type other than etcdv3 is an error, as is a
// config file that is given explicitly but missing, or that does not parse.
func Resolve(s Sources) (*Resolved, error) {
	names := s.FlagNames
	names.fill(cliFlagNames)
	r := &Resolved{endpointsFlag: names.Endpoints}
	spec, strictErr, err := r.readFile(s, names.ConfigFile)
	if err != nil {
		return nil, err
	}
	f := s.Flags
	flag := func(v, name string) setting { return setting{v, Origin{FromFlag, name}} }
	env := func(name string) setting { return setting{os.Getenv(name), Origin{FromEnv, name}} }
	file := func(v string) setting { return setting{v, Origin{FromFile, r.ConfigFile}} }

	typ, o := pick(flag(f.DatastoreType, names.DatastoreType), env("DATASTORE_TYPE"), file(spec.DatastoreType))
	r.Origins.DatastoreType = o
	if err := CheckType(typ); err != nil {
		where := o.String()
		if o.Source == FromFile {
			where = "datastore config file " + where + ": spec.datastoreType"
		}
		if o.Source == FromFile && r.ConfigFileFallback {
			return nil, fmt.Errorf("%s: %w (this file was read because %s does not exist; %s names another)", where, err, r.defaultFile, names.ConfigFile)
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if strictErr != nil {
		return nil, strictErr
	}

	epEnv := env("ETCD_ENDPOINTS")
	epEnv.val = joinList(epEnv.val)
	eps, o := pick(flag(joinList(f.Endpoints), names.Endpoints), epEnv, file(joinList(spec.EtcdEndpoints)))
	r.Config.Endpoints, r.Origins.Endpoints = SplitList(eps), o
	if len(r.Config.Endpoints) == 0 {
		r.Config.Endpoints = []string{DefaultEndpoint}
	}

	tls := []struct {
		flag, flagName, env string
		fileVal, inline     string
		fileKey, inlineKey  string
		path, pem           *string
		origin              *Origin
	}{
		{f.CertFile, names.CertFile, "ETCD_CERT_FILE", spec.EtcdCertFile, spec.EtcdCert, "etcdCertFile", "etcdCert", &r.Config.CertFile, &r.Config.CertPEM, &r.Origins.Cert},
		{f.KeyFile, names.KeyFile, "ETCD_KEY_FILE", spec.EtcdKeyFile, spec.EtcdKey, "etcdKeyFile", "etcdKey", &r.Config.KeyFile, &r.Config.KeyPEM, &r.Origins.Key},
		{f.CAFile, names.CAFile, "ETCD_CA_CERT_FILE", spec.EtcdCACertFile, spec.EtcdCACert, "etcdCACertFile", "etcdCACert", &r.Config.CAFile, &r.Config.CAPEM, &r.Origins.CA},
	}
	for _, t := range tls {
		fileVal := t.fileVal
		switch {
		case t.fileVal != "" && t.inline != "":
			return nil, fmt.Errorf("datastore config file %s: spec.%s and spec.%s are both set; keep one", r.ConfigFile, t.fileKey, t.inlineKey)
		case t.fileVal == "":
			fileVal = t.inline
		}
		v, o := pick(flag(t.flag, t.flagName), env(t.env), file(fileVal))
		if o.Source == FromFile && t.fileVal == "" {
			*t.pem = v
		} else {
			*t.path = v
		}
		*t.origin = o
	}
	r.Config.Username, r.Origins.Username = pick(flag(f.Username, names.Username), env("ETCD_USERNAME"), file(spec.EtcdUsername))
	r.Config.Password, r.Origins.Password = pick(flag(f.Password, names.Password), env("ETCD_PASSWORD"), file(spec.EtcdPassword))
	return r, nil
}

// CheckType accepts the datastore types tortie supports: etcdv3, or unset.
func CheckType(datastoreType string) error {
	if datastoreType == "" || datastoreType == SupportedType {
		return nil
	}
	return fmt.Errorf("datastore type %s is not supported yet; tortie supports %s", datastoreType, SupportedType)
}

// fileConfig is calicoctl's config file format (CalicoAPIConfig); tortie
// reads its etcd fields.
type fileConfig struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       fileSpec       `json:"spec"`
}

type fileSpec struct {
	DatastoreType  string `json:"datastoreType"`
	EtcdEndpoints  string `json:"etcdEndpoints"`
	EtcdUsername   string `json:"etcdUsername"`
	EtcdPassword   string `json:"etcdPassword"`
	EtcdCertFile   string `json:"etcdCertFile"`
	EtcdKeyFile    string `json:"etcdKeyFile"`
	EtcdCACertFile string `json:"etcdCACertFile"`
	// Inline PEM, in place of the files.
	EtcdCert   string `json:"etcdCert"`
	EtcdKey    string `json:"etcdKey"`
	EtcdCACert string `json:"etcdCACert"`
}

// readFile reads the config file. A field tortie does not know comes back
// as strictErr, separately, so that a Kubernetes config (whose fields are
// not etcd's) is refused for its datastore type rather than a field.
func (r *Resolved) readFile(s Sources, flagName string) (spec fileSpec, strictErr, err error) {
	path, given := s.Flags.ConfigFile, true
	if path == "" {
		path, given = cmp.Or(s.DefaultConfigFile, DefaultConfigFile), false
	}
	r.ConfigFile, r.defaultFile = path, path
	b, err := os.ReadFile(path)
	if !given && errors.Is(err, fs.ErrNotExist) {
		fallback := cmp.Or(s.FallbackConfigFile, CalicoConfigFile)
		if fb, fbErr := os.ReadFile(fallback); !errors.Is(fbErr, fs.ErrNotExist) {
			r.ConfigFile, r.ConfigFileFallback = fallback, true
			path, b, err = fallback, fb, fbErr
		}
	}
	switch {
	case err == nil:
	case !given && errors.Is(err, fs.ErrNotExist):
		return spec, nil, nil
	case given:
		return spec, nil, fmt.Errorf("datastore config file (%s): %w", flagName, err)
	default:
		return spec, nil, fmt.Errorf("datastore config file: %w", err)
	}
	r.ConfigFileRead = true
	var fc fileConfig
	if err := yaml.Unmarshal(b, &fc); err != nil {
		return spec, nil, fmt.Errorf("datastore config file %s: %w", path, err)
	}
	spec = fc.Spec
	if err := yaml.UnmarshalStrict(b, &fc); err != nil {
		return spec, fmt.Errorf("datastore config file %s: %w", path, err), nil
	}
	return spec, nil, nil
}

// setting is one place's value for a setting ("" where it sets none).
type setting struct {
	val  string
	from Origin
}

// pick returns the first value set, in the order given (flag, environment,
// file), with its origin; none set is the default: empty.
func pick(settings ...setting) (string, Origin) {
	for _, s := range settings {
		if s.val != "" {
			return s.val, s.from
		}
	}
	return "", Origin{Source: FromDefault}
}

// fill sets f's empty fields from def.
func (f *Flags) fill(def Flags) {
	for _, p := range []struct {
		dst *string
		def string
	}{
		{&f.Endpoints, def.Endpoints}, {&f.CertFile, def.CertFile}, {&f.KeyFile, def.KeyFile}, {&f.CAFile, def.CAFile},
		{&f.Username, def.Username}, {&f.Password, def.Password}, {&f.DatastoreType, def.DatastoreType},
		{&f.ConfigFile, def.ConfigFile},
	} {
		if *p.dst == "" {
			*p.dst = p.def
		}
	}
}

// SplitList reads a comma-separated list as ETCD_ENDPOINTS is written:
// items trimmed, empty ones dropped.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// joinList normalises a comma-separated list: "" when it names nothing.
func joinList(s string) string { return strings.Join(SplitList(s), ",") }

// WrapError is what every command does with its first failing datastore
// call: when nothing answers (ErrUnavailable, or the deadline passed) it
// is the one message that says where the datastore was looked for, where
// that came from and where to set another:
//
//	datastore at http://127.0.0.1:2379 (default) does not answer: ...; set --etcd-endpoints, ETCD_ENDPOINTS or /etc/tortie/tortie.cfg
//
// Any other error gets the endpoints in front. The result wraps err.
func (r *Resolved) WrapError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return &UnreachableError{Endpoints: r.Config.Endpoints, From: r.Origins.Endpoints,
			Hint: fmt.Sprintf("%s, ETCD_ENDPOINTS or %s", r.endpointsFlag, r.ConfigFile), Err: err}
	}
	if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrGRPCAuthFailed) {
		return fmt.Errorf("%s, as user %q (from %s; password from %s): %w", r.at(), r.Config.Username,
			r.Origins.Username, r.Origins.Password, err)
	}
	return fmt.Errorf("%s: %w", r.at(), err)
}

func (r *Resolved) at() string {
	return datastoreAt(r.Config.Endpoints, r.Origins.Endpoints)
}

func datastoreAt(endpoints []string, from Origin) string {
	o := "default"
	if from.Source != FromDefault {
		o = "from " + from.String()
	}
	return fmt.Sprintf("datastore at %s (%s)", strings.Join(endpoints, ","), o)
}

// UnreachableError is WrapError's error for a datastore that does not
// answer.
type UnreachableError struct {
	Endpoints []string
	From      Origin
	// Hint says where to set the endpoints.
	Hint string
	Err  error
}

func (e *UnreachableError) Error() string {
	detail := strings.TrimPrefix(e.Err.Error(), ErrUnavailable.Error()+": ")
	return fmt.Sprintf("%s does not answer: %s; set %s", datastoreAt(e.Endpoints, e.From), detail, e.Hint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// LogValue is the datastore for a log line: endpoints and where they came
// from; TLS files and the user where set. Never the password or PEM.
func (r *Resolved) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("endpoints", strings.Join(r.Config.Endpoints, ",")),
		slog.String("from", r.Origins.Endpoints.String()),
	}
	if r.ConfigFileRead {
		attrs = append(attrs, slog.String("config", r.ConfigFile))
	}
	for _, v := range []struct {
		key, path, pem string
		o              Origin
	}{
		{"cert", r.Config.CertFile, r.Config.CertPEM, r.Origins.Cert},
		{"key", r.Config.KeyFile, r.Config.KeyPEM, r.Origins.Key},
		{"ca", r.Config.CAFile, r.Config.CAPEM, r.Origins.CA},
		{"user", r.Config.Username, "", r.Origins.Username},
	} {
		switch {
		case v.path != "":
			attrs = append(attrs, slog.String(v.key, v.path+" (from "+v.o.String()+")"))
		case v.pem != "":
			attrs = append(attrs, slog.String(v.key, "inline (from "+v.o.String()+")"))
		}
	}
	return slog.GroupValue(attrs...)
}

// UnsafeNoFsyncHelp is the help of the --unsafe-no-fsync flag of
// tortie-datastore and `tortie datastore serve` (embedded.ServeConfig's
// UnsafeNoFsync).
const UnsafeNoFsyncHelp = "do not fsync (etcd's --unsafe-no-fsync): the data survives the process, not a machine crash; for labs and tests on a busy disk"

// Open resolves the datastore from the flags (then the environment and the
// config file, as Resolve does) and connects to it with log, as the
// long-running programs (tortie-node, tortie-typha,
// tortie-kube-controllers) do at start.
func (f Flags) Open(log *slog.Logger) (*Resolved, *Etcd, error) {
	ds, err := Resolve(Sources{Flags: f})
	if err != nil {
		return nil, nil, err
	}
	cfg := ds.Config
	cfg.Logger = log
	be, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return ds, be, nil
}
