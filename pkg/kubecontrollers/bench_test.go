package kubecontrollers

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// BenchmarkColdSync: the built tortie-kube-controllers, as its own
// process, starts against an API server holding 1,000 namespaces (each
// with a service account), 1,000 NetworkPolicies and 10,000 pods, and an
// etcd holding the pods' 10,000 WorkloadEndpoints as the CNI plugin wrote
// them (no pod labels yet). Reported: the time from process start to
// /readiness (every controller's first full reconcile done), each
// controller's first_sync_seconds, peak RSS (VmHWM) and peak Go heap in
// use during the sync, the CPU the process used at steady state over a
// minute with a full reconcile every 30 s, and the load average.
//
//	go test -run XXX -bench ColdSync -benchtime 1x ./pkg/kubecontrollers/
func BenchmarkColdSync(b *testing.B) {
	const namespaces, podsPerNS = 1000, 10
	c := kubetest.Start(b)
	etcd := etcdtest.Start(b)
	be := etcdtest.NewClient(b, etcd)
	cl := client.New(be)
	ctx := context.Background()
	admin := c.Client

	// The cluster.
	setup := time.Now()
	parallel(b, namespaces, 16, func(i int) error {
		ns := fmt.Sprintf("bench-%04d", i)
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": fmt.Sprint(i % 7)}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := admin.NetworkingV1().NetworkPolicies(ns).Create(ctx, testPolicy(ns, "np", 80), metav1.CreateOptions{})
		return err
	})
	parallel(b, namespaces*podsPerNS, 16, func(i int) error {
		return createBenchPod(ctx, admin, fmt.Sprintf("bench-%04d", i/podsPerNS), fmt.Sprintf("pod-%d", i%podsPerNS), fmt.Sprintf("node-%d", i%50))
	})
	var weps []v3.Resource
	for i := range namespaces * podsPerNS {
		ns, pod, node := fmt.Sprintf("bench-%04d", i/podsPerNS), fmt.Sprintf("pod-%d", i%podsPerNS), fmt.Sprintf("node-%d", i%50)
		weps = append(weps, mk(b, kindWEP, fmt.Sprintf(`{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":%q,"namespace":%q},
			"spec":{"orchestrator":"k8s","node":%q,"pod":%q,"endpoint":"eth0","containerID":"c%d","ipNetworks":["10.%d.%d.%d/32"],"profiles":["kns.%s"],"interfaceName":"cali%011d"}}`,
			v3.WorkloadEndpointName(node, "k8s", pod, "eth0"), ns, node, pod, i, 100+i/65536, (i/256)%256, i%256, ns, i)))
		if len(weps) == 500 {
			if _, err := cl.Batch(ctx, client.OpCreate, weps); err != nil {
				b.Fatal(err)
			}
			weps = weps[:0]
		}
	}
	b.Logf("setup: %d namespaces, %d NetworkPolicies, %d pods, %d endpoints in %v", namespaces, namespaces, namespaces*podsPerNS, namespaces*podsPerNS, time.Since(setup).Round(time.Second))

	bin := filepath.Join(b.TempDir(), "tortie-kube-controllers")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tortie/tortie/cmd/tortie-kube-controllers").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	health, _ := etcdtest.FreePort()
	metricsPort, _ := etcdtest.FreePort()
	for range b.N {
		load0 := loadavg()
		logf, _ := os.Create(filepath.Join(b.TempDir(), "controllers.log"))
		cmd := exec.Command(bin, "--kubeconfig", c.Server.AdminKubeconfig(), "--etcd-endpoints", etcd.Endpoint(),
			"--leader-elect=false", "--reconcile-interval=30s",
			"--health-addr", fmt.Sprintf("127.0.0.1:%d", health), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort))
		cmd.Stdout, cmd.Stderr = logf, logf
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var peakHeap float64
		var synced time.Duration
		for synced == 0 {
			if time.Since(start) > 10*time.Minute {
				cmd.Process.Kill()
				b.Fatal("not ready after 10 minutes")
			}
			if h := metric(fmt.Sprintf("127.0.0.1:%d", metricsPort), "go_memstats_heap_inuse_bytes"); h > peakHeap {
				peakHeap = h
			}
			if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readiness", health)); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					synced = time.Since(start)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		firsts := metricLines(fmt.Sprintf("127.0.0.1:%d", metricsPort), metricPrefix+"first_sync_seconds")
		writes := metric(fmt.Sprintf("127.0.0.1:%d", metricsPort), metricPrefix+"writes_total")
		hwm := procStatus(cmd.Process.Pid, "VmHWM:")
		cpu0 := procCPU(cmd.Process.Pid)
		t0 := time.Now()
		time.Sleep(time.Minute)
		for range 20 {
			if h := metric(fmt.Sprintf("127.0.0.1:%d", metricsPort), "go_memstats_heap_inuse_bytes"); h > peakHeap {
				peakHeap = h
			}
		}
		steady := (procCPU(cmd.Process.Pid) - cpu0) / time.Since(t0).Seconds()
		rss := procStatus(cmd.Process.Pid, "VmRSS:")
		hwmEnd := procStatus(cmd.Process.Pid, "VmHWM:")
		load1 := loadavg()
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logf.Close()

		b.ReportMetric(synced.Seconds(), "s-to-ready")
		b.ReportMetric(float64(hwmEnd)/1024, "MiB-peak-RSS")
		b.ReportMetric(peakHeap/(1<<20), "MiB-peak-heap")
		b.ReportMetric(steady*100, "%CPU-steady")
		b.ReportMetric(writes, "writes")
		b.Logf("ready after %v; first full reconcile per controller (s): %s", synced.Round(time.Millisecond), strings.Join(firsts, ", "))
		b.Logf("writes %v; peak RSS %.0f MiB at ready, %.0f MiB over the run (RSS at the end %.0f MiB); peak heap in use %.0f MiB; steady state %.2f%% of a core (a full reconcile every 30 s)",
			writes, float64(hwm)/1024, float64(hwmEnd)/1024, float64(rss)/1024, peakHeap/(1<<20), steady*100)
		b.Logf("load average before %s, after %s; %d cores", load0, load1, numCPU())
	}
}

func createBenchPod(ctx context.Context, admin kubernetes.Interface, ns, name, node string) error {
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name, "tier": "bench"}},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: "robot", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	_, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	return err
}

// parallel runs f(0..n-1) on workers goroutines, failing b on an error.
func parallel(b *testing.B, n, workers int, f func(i int) error) {
	b.Helper()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// metricLines are the samples of a metric family, as "labels value".
func metricLines(addr, name string) []string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			out = append(out, strings.TrimPrefix(l, name))
		}
	}
	return out
}

// metric is the sum of a metric family's samples.
func metric(addr, name string) float64 {
	var sum float64
	for _, l := range metricLines(addr, name) {
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// procStatus is a kB field of /proc/<pid>/status.
func procStatus(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// procCPU is the process's user and system CPU time, in seconds.
func procCPU(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func numCPU() int { return runtime.NumCPU() }
