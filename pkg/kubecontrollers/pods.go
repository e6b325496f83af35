package kubecontrollers

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The workloadendpoint controller. The CNI plugin writes a pod's
// WorkloadEndpoint at ADD with what it knows (addresses, interface, the
// namespace profile) and cannot know the rest: the pod's labels, service
// account and ports are the controller's to fill in and keep in step. Its
// key is "<namespace>/<pod>"; what is worked on is every endpoint whose
// spec.pod is that pod (a pod with several interfaces has several).
//
// An endpoint whose pod is gone is deleted after the grace period, and
// only when the API server itself says the pod does not exist: the CNI
// plugin writes a new pod's endpoint when the pod may not have reached
// this instance's cache yet, and during an API server outage the cache
// says nothing new.

// Indexes of the endpoint cache.
const (
	indexPod  = "pod"  // "<ns>/<pod>" of Kubernetes endpoints
	indexNode = "node" // spec.node
)

func endpointPodKey(r v3.Resource) []string {
	w := r.(*v3.WorkloadEndpoint)
	if w.Spec.Orchestrator != v3.OrchestratorKubernetes || w.Spec.Pod == "" {
		return nil
	}
	return []string{w.Namespace + "/" + w.Spec.Pod}
}

func endpointNode(r v3.Resource) []string {
	w := r.(*v3.WorkloadEndpoint)
	if w.Spec.Node == "" {
		return nil
	}
	return []string{w.Spec.Node}
}

type endpointController struct {
	pods  listerscorev1.PodLister
	kube  kubernetes.Interface
	store *store
	w     *writer
	log   *slog.Logger
	grace time.Duration
	now   func() time.Time
	// requeue queues a key again later (the controller's AddAfter).
	requeue func(key string, after time.Duration)

	mu sync.Mutex
	// missing is when each pod with endpoints was first found missing.
	missing map[string]time.Time
}

func (c *endpointController) keys() []string { return c.store.indexValues(indexPod) }

func (c *endpointController) sync(ctx context.Context, key string) error {
	weps := c.store.byIndex(indexPod, key)
	if len(weps) == 0 {
		c.forget(key)
		return nil
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pod, err := c.pods.Pods(ns).Get(name)
	switch {
	case err == nil:
		c.forget(key)
		return c.update(ctx, pod, weps)
	case !apierrors.IsNotFound(err):
		return err
	}

	// The pod is not in the cache.
	now := c.now()
	c.mu.Lock()
	first, ok := c.missing[key]
	if !ok {
		first = now
		c.missing[key] = now
	}
	c.mu.Unlock()
	if wait := c.grace - now.Sub(first); wait > 0 {
		c.requeue(key, wait+100*time.Millisecond)
		return nil
	}
	live, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		// The cache is behind; its event will queue the key again.
		c.log.Info("pod missing from the cache exists; keeping its endpoints", "pod", key)
		c.forget(key)
		return c.update(ctx, live, weps)
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("confirming pod %s is gone: %w", key, err)
	}
	why := fmt.Sprintf("pod %s no longer exists (missing for %v)", key, now.Sub(first).Round(time.Second))
	for _, r := range weps {
		wep := r.(*v3.WorkloadEndpoint)
		err := c.w.apply(ctx, kindWEP, wep.Namespace, wep.Name, wep, func(cur v3.Resource) (v3.Resource, bool, string) {
			if cur == nil || cur.(*v3.WorkloadEndpoint).Spec.Pod != name {
				return nil, false, ""
			}
			return nil, true, why
		})
		if err != nil {
			return err
		}
	}
	c.forget(key)
	return nil
}

// update brings the pod's endpoints in step with it. An endpoint on
// another node than the pod's is an earlier pod's of the same name, left
// for that node's CNI DEL (or the grace period once the pod is gone).
func (c *endpointController) update(ctx context.Context, pod *corev1.Pod, weps []v3.Resource) error {
	if !k8s.PodHasEndpoint(pod) {
		return nil
	}
	key := pod.Namespace + "/" + pod.Name
	for _, r := range weps {
		wep := r.(*v3.WorkloadEndpoint)
		if wep.Spec.Node != pod.Spec.NodeName {
			c.log.Debug("endpoint is on another node than its pod; leaving it", "endpoint", wep.Name, "pod", key, "node", pod.Spec.NodeName)
			continue
		}
		err := c.w.apply(ctx, kindWEP, wep.Namespace, wep.Name, wep, func(cur v3.Resource) (v3.Resource, bool, string) {
			if cur == nil {
				return nil, false, "" // gone meanwhile (CNI DEL)
			}
			want, _ := EndpointForPod(pod, cur.(*v3.WorkloadEndpoint))
			if want == nil {
				return nil, false, ""
			}
			return want, false, "pod " + key
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *endpointController) forget(key string) {
	c.mu.Lock()
	delete(c.missing, key)
	c.mu.Unlock()
}

// podChanged reports an update that may change the pod's endpoints:
// labels, service account, ports, node, or its being deleted.
func podChanged(old, cur *corev1.Pod) bool {
	return !maps.Equal(old.Labels, cur.Labels) ||
		old.Spec.ServiceAccountName != cur.Spec.ServiceAccountName ||
		old.Spec.NodeName != cur.Spec.NodeName ||
		!slices.EqualFunc(k8s.PodPorts(old), k8s.PodPorts(cur), func(a, b v3.WorkloadEndpointPort) bool { return jsonEqual(a, b) }) ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil) ||
		!slices.Equal(podIPs(old), podIPs(cur))
}

func podIPs(p *corev1.Pod) []string {
	out := make([]string, len(p.Status.PodIPs))
	for i, ip := range p.Status.PodIPs {
		out[i] = ip.IP
	}
	return out
}
