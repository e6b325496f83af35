package v3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// validateDefaultName enforces the single instance name "default" of the
// cluster-wide singleton kinds.
func validateDefaultName(p Path, name string) ErrorList {
	if errs := ValidateResourceName(p, name); len(errs) > 0 {
		return errs
	}
	if name != ConfigNameDefault {
		return ErrorList{p.Errorf("%q: the only valid name is %q", name, ConfigNameDefault)}
	}
	return nil
}

// ClusterInformation describes the cluster; agents wait for datastoreReady.
type ClusterInformation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterInformationSpec `json:"spec,omitempty"`
}

// ClusterInformationSpec is the JSON shape of Calico's.
type ClusterInformationSpec struct {
	ClusterGUID    string `json:"clusterGUID,omitempty"`
	ClusterType    string `json:"clusterType,omitempty"`
	CalicoVersion  string `json:"calicoVersion,omitempty"`
	DatastoreReady *bool  `json:"datastoreReady,omitempty"`
	Variant        string `json:"variant,omitempty"`
}

func (r *ClusterInformation) validateName(p Path) ErrorList { return validateDefaultName(p, r.Name) }

// KubeControllersConfiguration configures the Kubernetes controllers.
type KubeControllersConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KubeControllersConfigurationSpec   `json:"spec,omitempty"`
	Status KubeControllersConfigurationStatus `json:"status,omitempty"`
}

// KubeControllersConfigurationSpec is the JSON shape of Calico's.
type KubeControllersConfigurationSpec struct {
	LogSeverityScreen      string            `json:"logSeverityScreen,omitempty"`
	HealthChecks           string            `json:"healthChecks,omitempty"`
	EtcdV3CompactionPeriod *metav1.Duration  `json:"etcdV3CompactionPeriod,omitempty"`
	PrometheusMetricsPort  *int              `json:"prometheusMetricsPort,omitempty"`
	Controllers            ControllersConfig `json:"controllers"`
	DebugProfilePort       *int32            `json:"debugProfilePort,omitempty"`
}

// ControllersConfig enables (non-nil) and configures each controller.
type ControllersConfig struct {
	Node             *NodeControllerConfig             `json:"node,omitempty"`
	Policy           *PolicyControllerConfig           `json:"policy,omitempty"`
	WorkloadEndpoint *WorkloadEndpointControllerConfig `json:"workloadEndpoint,omitempty"`
	ServiceAccount   *ServiceAccountControllerConfig   `json:"serviceAccount,omitempty"`
	Namespace        *NamespaceControllerConfig        `json:"namespace,omitempty"`
	LoadBalancer     *LoadBalancerControllerConfig     `json:"loadBalancer,omitempty"`
	Migration        *MigrationControllerConfig        `json:"policyMigration,omitempty"`
}

// NodeControllerConfig configures node clean-up, label sync, automatic host
// endpoints and IP garbage collection.
type NodeControllerConfig struct {
	ReconcilerPeriod *metav1.Duration        `json:"reconcilerPeriod,omitempty"`
	SyncLabels       string                  `json:"syncLabels,omitempty"`
	HostEndpoint     *AutoHostEndpointConfig `json:"hostEndpoint,omitempty"`
	LeakGracePeriod  *metav1.Duration        `json:"leakGracePeriod,omitempty"`
}

// AutoHostEndpointConfig configures automatic host endpoints.
type AutoHostEndpointConfig struct {
	AutoCreate                string                     `json:"autoCreate,omitempty"`
	CreateDefaultHostEndpoint string                     `json:"createDefaultHostEndpoint,omitempty"`
	Templates                 []AutoHostEndpointTemplate `json:"templates,omitempty"`
}

// AutoHostEndpointTemplate generates host endpoints for matching interfaces.
type AutoHostEndpointTemplate struct {
	GenerateName     string            `json:"generateName,omitempty"`
	InterfaceCIDRs   []string          `json:"interfaceCIDRs,omitempty"`
	InterfacePattern string            `json:"interfacePattern,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
	NodeSelector     string            `json:"nodeSelector,omitempty"`
}

// PolicyControllerConfig configures the policy controller.
type PolicyControllerConfig struct {
	ReconcilerPeriod *metav1.Duration `json:"reconcilerPeriod,omitempty"`
}

// WorkloadEndpointControllerConfig configures the workload endpoint controller.
type WorkloadEndpointControllerConfig struct {
	ReconcilerPeriod *metav1.Duration `json:"reconcilerPeriod,omitempty"`
}

// ServiceAccountControllerConfig configures the service account controller.
type ServiceAccountControllerConfig struct {
	ReconcilerPeriod *metav1.Duration `json:"reconcilerPeriod,omitempty"`
}

// NamespaceControllerConfig configures the namespace controller.
type NamespaceControllerConfig struct {
	ReconcilerPeriod *metav1.Duration `json:"reconcilerPeriod,omitempty"`
}

// LoadBalancerControllerConfig configures LoadBalancer IP assignment.
type LoadBalancerControllerConfig struct {
	AssignIPs string `json:"assignIPs,omitempty"`
}

// MigrationControllerConfig configures the policy name migrator.
type MigrationControllerConfig struct {
	PolicyNameMigrator string `json:"enabled,omitempty"`
}

// KubeControllersConfigurationStatus is the effective running config.
type KubeControllersConfigurationStatus struct {
	RunningConfig   *KubeControllersConfigurationSpec `json:"runningConfig,omitempty"`
	EnvironmentVars map[string]string                 `json:"environmentVars,omitempty"`
}

func (r *KubeControllersConfiguration) validateName(p Path) ErrorList {
	return validateDefaultName(p, r.Name)
}

func (r *KubeControllersConfiguration) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	add := func(e ErrorList) { errs = append(errs, e...) }
	levels := []string{"None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic"}
	add(validateOneOfFold(spec.Child("logSeverityScreen"), s.LogSeverityScreen, levels...))
	add(ValidateOneOf(spec.Child("healthChecks"), s.HealthChecks, "Enabled", "Disabled"))
	add(validateDuration(spec.Child("etcdV3CompactionPeriod"), s.EtcdV3CompactionPeriod, 0))
	if s.PrometheusMetricsPort != nil && (*s.PrometheusMetricsPort < 0 || *s.PrometheusMetricsPort > 65535) {
		add(ErrorList{spec.Child("prometheusMetricsPort").Errorf("%d is out of range 0-65535", *s.PrometheusMetricsPort)})
	}
	if s.DebugProfilePort != nil && (*s.DebugProfilePort < 0 || *s.DebugProfilePort > 65535) {
		add(ErrorList{spec.Child("debugProfilePort").Errorf("%d is out of range 0-65535", *s.DebugProfilePort)})
	}
	c := spec.Child("controllers")
	if n := s.Controllers.Node; n != nil {
		np := c.Child("node")
		add(validateDuration(np.Child("reconcilerPeriod"), n.ReconcilerPeriod, 0))
		add(validateDuration(np.Child("leakGracePeriod"), n.LeakGracePeriod, 0))
		add(ValidateOneOf(np.Child("syncLabels"), n.SyncLabels, "Enabled", "Disabled"))
		if h := n.HostEndpoint; h != nil {
			hp := np.Child("hostEndpoint")
			add(ValidateOneOf(hp.Child("autoCreate"), h.AutoCreate, "Enabled", "Disabled"))
			add(ValidateOneOf(hp.Child("createDefaultHostEndpoint"), h.CreateDefaultHostEndpoint, "Enabled", "Disabled"))
			for i, t := range h.Templates {
				tp := hp.Child("templates").Index(i)
				add(ValidateCIDRs(tp.Child("interfaceCIDRs"), t.InterfaceCIDRs))
				add(ValidateLabels(tp.Child("labels"), t.Labels))
				if t.NodeSelector != "" {
					add(ValidateSelector(tp.Child("nodeSelector"), t.NodeSelector))
				}
				if len(t.InterfaceCIDRs) == 0 && t.InterfacePattern == "" {
					add(ErrorList{tp.Errorf("at least one of interfaceCIDRs and interfacePattern is required")})
				}
			}
		}
	}
	ctl := s.Controllers
	if ctl.Policy != nil {
		add(validateDuration(c.Child("policy").Child("reconcilerPeriod"), ctl.Policy.ReconcilerPeriod, 0))
	}
	if ctl.WorkloadEndpoint != nil {
		add(validateDuration(c.Child("workloadEndpoint").Child("reconcilerPeriod"), ctl.WorkloadEndpoint.ReconcilerPeriod, 0))
	}
	if ctl.ServiceAccount != nil {
		add(validateDuration(c.Child("serviceAccount").Child("reconcilerPeriod"), ctl.ServiceAccount.ReconcilerPeriod, 0))
	}
	if ctl.Namespace != nil {
		add(validateDuration(c.Child("namespace").Child("reconcilerPeriod"), ctl.Namespace.ReconcilerPeriod, 0))
	}
	if lb := s.Controllers.LoadBalancer; lb != nil {
		add(ValidateOneOf(c.Child("loadBalancer").Child("assignIPs"), lb.AssignIPs, "AllServices", "RequestedServicesOnly"))
	}
	if m := s.Controllers.Migration; m != nil {
		add(ValidateOneOf(c.Child("policyMigration").Child("enabled"), m.PolicyNameMigrator, "Enabled", "Disabled"))
	}
	return errs
}

// IPAMConfiguration is the cluster-wide IPAM configuration.
type IPAMConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPAMConfigurationSpec `json:"spec,omitempty"`
}

// IPAMConfigurationSpec is the JSON shape of Calico's. strictAffinity has no
// omitempty in Calico and is always written.
type IPAMConfigurationSpec struct {
	StrictAffinity   bool  `json:"strictAffinity"`
	MaxBlocksPerHost int32 `json:"maxBlocksPerHost,omitempty"`
	// AutoAllocateBlocks (default true) lets nodes claim new blocks. Calico
	// keeps it only in its internal IPAM config; tortie also accepts it here.
	AutoAllocateBlocks           *bool                 `json:"autoAllocateBlocks,omitempty"`
	KubeVirtVMAddressPersistence *VMAddressPersistence `json:"kubeVirtVMAddressPersistence,omitempty"`
}

// VMAddressPersistence says whether KubeVirt VMs keep their addresses.
type VMAddressPersistence string

func (r *IPAMConfiguration) validateName(p Path) ErrorList { return validateDefaultName(p, r.Name) }

func (r *IPAMConfiguration) validate() ErrorList {
	var errs ErrorList
	spec := Path("spec")
	if r.Spec.MaxBlocksPerHost < 0 {
		errs = append(errs, spec.Child("maxBlocksPerHost").Errorf("must not be negative (0 means no limit), got %d", r.Spec.MaxBlocksPerHost))
	}
	if p := r.Spec.KubeVirtVMAddressPersistence; p != nil {
		errs = append(errs, validateEnum(spec.Child("kubeVirtVMAddressPersistence"), string(*p), "Enabled", "Disabled")...)
	}
	return errs
}
