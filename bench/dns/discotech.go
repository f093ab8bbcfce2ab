package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// checkDNSFlag fails unless `disco server` takes --dns.
func checkDNSFlag(bin string) error {
	out, err := exec.Command(bin, "server", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s server --help: %w\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), "--dns") {
		return fmt.Errorf("%s server has no --dns flag: this disco serves no DNS (measure dnsmasq alone with -only dnsmasq)", bin)
	}
	return nil
}

// startDiscotech starts `disco server` with DNS on free loopback ports and a
// fresh data dir, waits until it is ready, registers the services, and
// waits until its DNS answers the probe.
func startDiscotech(ctx context.Context, bin, tmp string, services []service, probe query) (*server, error) {
	dir, err := os.MkdirTemp(tmp, "discotech-")
	if err != nil {
		return nil, err
	}
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = sysstat.FreeAddr(); err != nil {
			return nil, err
		}
	}
	httpAddr, raftAddr, dnsAddr := addrs[0], addrs[1], addrs[2]
	p, err := peer.Start("discotech", dir, bin, "server",
		"--data-dir", filepath.Join(dir, "data"),
		"--http", httpAddr, "--raft", raftAddr, "--raft-multiplier", "1",
		"--dns", dnsAddr, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	s := &server{Process: p, dns: dnsAddr}
	base := "http://" + httpAddr
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	if err := s.WaitReady(ctx, "ready", peer.HTTPReady(base+"/readyz", "")); err != nil {
		s.Stop()
		return nil, err
	}
	for _, svc := range services {
		for _, i := range svc.instances {
			body, _ := json.Marshal(map[string]any{
				"address": i.addr.String(), "port": i.port, "weight": i.weight, "tags": []string{"v1"},
			})
			url := fmt.Sprintf("%s/v1/services/%s/instances/%s", base, svc.name, i.id)
			status, resp, err := do(ctx, hc, http.MethodPut, url, body)
			if err == nil && status/100 != 2 {
				err = fmt.Errorf("%d %s", status, bytes.TrimSpace(resp))
			}
			if err != nil {
				s.Stop()
				return nil, fmt.Errorf("discotech: register %s/%s: %w", svc.name, i.id, err)
			}
		}
	}
	if err := s.WaitReady(ctx, "answering DNS", func(ctx context.Context) error {
		_, err := ask(ctx, dnsAddr, probe, true)
		return err
	}); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// do sends one HTTP request and returns the status and body.
func do(ctx context.Context, hc *http.Client, method, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
