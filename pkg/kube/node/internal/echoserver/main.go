// Command echoserver is the test image's program. With no arguments (or
// "serve") it answers HTTP on :8080 with its host name and the caller's
// address, echoes TCP on :8081 and UDP on :8082, and logs every HTTP
// request on standard output (for kubectl logs). "get URL [TIMEOUT]"
// fetches URL and prints the body (a client for kubectl exec in an image
// without tools); TIMEOUT (a Go duration, default 10s) bounds it.
// "stream HOST:PORT DURATION" keeps one TCP connection to an echo port for
// DURATION, a line every 20 ms, and reports how many came back and the
// longest wait for one; it fails if the connection breaks or a line takes
// more than 2 s (an established flow that did not survive).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "get" {
		timeout := 10 * time.Second
		if len(os.Args) > 3 {
			d, err := time.ParseDuration(os.Args[3])
			if err != nil || d <= 0 {
				fmt.Fprintf(os.Stderr, "echoserver get: timeout %q: want a duration such as 2s\n", os.Args[3])
				os.Exit(2)
			}
			timeout = d
		}
		os.Exit(get(os.Args[2], timeout))
	}
	if len(os.Args) > 3 && os.Args[1] == "stream" {
		d, err := time.ParseDuration(os.Args[3])
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "echoserver stream: duration %q: want a duration such as 20s\n", os.Args[3])
			os.Exit(2)
		}
		os.Exit(stream(os.Args[2], d))
	}
	if len(os.Args) > 1 && os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: echoserver [serve] | get URL [TIMEOUT]")
		os.Exit(2)
	}
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
}

func get(url string, timeout time.Duration) int {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	return 0
}

func stream(addr string, d time.Duration) int {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	var sent, echoed int
	var maxWait time.Duration
	buf := make([]byte, 64)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		line := fmt.Sprintf("%09d\n", sent)
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(2 * time.Second))
		if _, err := c.Write([]byte(line)); err != nil {
			fmt.Printf("sent=%d echoed=%d maxwait=%v\n", sent, echoed, maxWait)
			fmt.Fprintln(os.Stderr, "write:", err)
			return 1
		}
		sent++
		if _, err := io.ReadFull(c, buf[:len(line)]); err != nil || string(buf[:len(line)]) != line {
			fmt.Printf("sent=%d echoed=%d maxwait=%v\n", sent, echoed, maxWait)
			fmt.Fprintf(os.Stderr, "read: %v (got %q)\n", err, buf[:len(line)])
			return 1
		}
		echoed++
		maxWait = max(maxWait, time.Since(t0))
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("sent=%d echoed=%d maxwait=%v\n", sent, echoed, maxWait)
	return 0
}

func serve() error {
	host, _ := os.Hostname()
	tcp, err := net.Listen("tcp", ":8081")
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	udp, err := net.ListenPacket("udp", ":8082")
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udp.WriteTo(buf[:n], addr)
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("%s %s %s\n", r.RemoteAddr, r.Method, r.URL.Path)
		fmt.Fprintf(w, "host=%s client=%s\n", host, r.RemoteAddr)
	})
	fmt.Printf("echoserver %s: http :8080, tcp :8081, udp :8082\n", host)
	return http.ListenAndServe(":8080", mux)
}
