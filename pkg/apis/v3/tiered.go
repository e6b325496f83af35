package v3

// PolicyTier is the tier a policy lives in; "default" when unset, as
// defaulting will make it.
func (p *NetworkPolicy) PolicyTier() string { return defaultTier(p.Spec.Tier) }

// PolicyTier is the tier a policy lives in.
func (p *GlobalNetworkPolicy) PolicyTier() string { return defaultTier(p.Spec.Tier) }

// PolicyTier is the tier a policy lives in.
func (p *StagedNetworkPolicy) PolicyTier() string { return defaultTier(p.Spec.Tier) }

// PolicyTier is the tier a policy lives in.
func (p *StagedGlobalNetworkPolicy) PolicyTier() string { return defaultTier(p.Spec.Tier) }
