package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/discotech/disco/catalog"
)

// DefaultProbe checks a held backend the cheapest way that says something:
// GET its vitals endpoint when its registration has a vitals check (alive
// when it answers 2xx and does not say ready:false), else a TCP connect to
// its address and port.
func DefaultProbe(ctx context.Context, in *catalog.Instance) error {
	if in.Check != nil && in.Check.Type == "vitals" {
		return probeVitals(ctx, in.Check.Target)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(in.Address, strconv.Itoa(in.Port)))
	if err != nil {
		return err
	}
	return c.Close()
}

var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func probeVitals(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("vitals: %s", resp.Status)
	}
	var v struct {
		Ready *bool `json:"ready"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&v); err != nil {
		return fmt.Errorf("vitals: %w", err)
	}
	if v.Ready != nil && !*v.Ready {
		return errors.New("vitals: ready:false")
	}
	return nil
}
