// Package client is Discotech's Go SDK (docs/sdk.md):
//
//   - Client speaks the registry's native HTTP API (docs/api.md): it
//     registers instances and keeps them alive with heartbeats (Keep),
//     lists services and instances with blocking queries, and follows
//     changes on the watch stream (Watch, and Follower on top of it).
//   - Backend runs an HTTP backend the way the rest of Discotech expects:
//     registered, serving its Vitals, and draining on SIGTERM (ready:false,
//     deregister, finish what is in flight).
//   - Resolver resolves and dials services in-process with the balancing
//     policies of package balance, and its Transport sends
//     http://web.service.disco/ to a backend; package grpcdisco builds on it
//     for gRPC.
//
// The disco command line uses Client for every call it makes, so what works
// from the shell works from Go the same way.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
)

// DefaultAddress is where a registry server listens unless told otherwise.
const DefaultAddress = "http://127.0.0.1:7700"

// ErrNotFound is wrapped by errors for a 404: the instance (or endpoint) is
// not there. A heartbeat that returns it means: register again.
var ErrNotFound = errors.New("client: not found")

// Error is a non-2xx answer from the server.
type Error struct {
	Method, Path string
	Status       int
	// Message is the server's {"error": ...} text.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("client: %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap makes errors.Is(err, ErrNotFound) true for a 404.
func (e *Error) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// Client talks to one registry server. It is safe for concurrent use.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// New returns a client of the server at address, a URL such as
// "http://127.0.0.1:7700" or just "127.0.0.1:7700". hc may be nil for a
// client with sensible transport defaults; it must not have a Timeout,
// since blocking queries and watch streams are long.
func New(address string, hc *http.Client) (*Client, error) {
	if address == "" {
		address = DefaultAddress
	}
	if !strings.Contains(address, "://") {
		address = "http://" + address
	}
	u, err := url.Parse(address)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("client: server address %q is not an http:// URL or host:port", address)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: t}
	}
	return &Client{base: u, hc: hc}, nil
}

// Address is the server's base URL.
func (c *Client) Address() string { return c.base.String() }

// do sends a request and decodes a JSON answer into out (when non-nil). It
// returns the response headers.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) (http.Header, error) {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return resp.Header, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return resp.Header, nil
}

// send sends a request and returns a 2xx response, or the server's error.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return nil, &Error{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
}

func instancePath(service, id string) string {
	return "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
}

// Register registers (or replaces) instance id of service and returns it as
// the server stored it.
func (c *Client) Register(ctx context.Context, service, id string, reg catalog.Registration) (*catalog.Instance, error) {
	var out struct {
		Instance *catalog.Instance `json:"instance"`
	}
	if _, err := c.do(ctx, http.MethodPut, instancePath(service, id), nil, reg, &out); err != nil {
		return nil, err
	}
	return out.Instance, nil
}

// Deregister removes instance id of service. It wraps ErrNotFound when the
// instance was not registered.
func (c *Client) Deregister(ctx context.Context, service, id string) error {
	_, err := c.do(ctx, http.MethodDelete, instancePath(service, id), nil, nil, nil)
	return err
}

// Heartbeat renews the TTL of instance id of service. It wraps ErrNotFound
// when the server does not know the instance: register it again.
func (c *Client) Heartbeat(ctx context.Context, service, id string) error {
	_, err := c.do(ctx, http.MethodPut, instancePath(service, id)+"/heartbeat", nil, nil, nil)
	return err
}

// Heartbeats renews the TTLs of many instances in one request; keys are
// "service/id" (catalog.Key). It returns the keys the server does not know,
// which must be registered again.
func (c *Client) Heartbeats(ctx context.Context, keys []string) (unknown []string, err error) {
	var out struct {
		Unknown []string `json:"unknown"`
	}
	body := struct {
		Instances []string `json:"instances"`
	}{keys}
	if _, err := c.do(ctx, http.MethodPut, "/v1/heartbeats", nil, body, &out); err != nil {
		return nil, err
	}
	return out.Unknown, nil
}

// Instance returns one instance.
func (c *Client) Instance(ctx context.Context, service, id string) (*catalog.Instance, error) {
	var out catalog.Instance
	if _, err := c.do(ctx, http.MethodGet, instancePath(service, id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Query selects and blocks a read.
type Query struct {
	// Passing keeps only passing instances.
	Passing bool
	// Tags keeps only instances carrying every one of these tags.
	Tags []string
	// Index, when non-zero, makes the read block until the index passes it
	// or Wait ends (a blocking query).
	Index uint64
	// Wait bounds a blocking query; zero means the server's default (5m).
	Wait time.Duration
}

func (q Query) values() url.Values {
	v := url.Values{}
	if q.Passing {
		v.Set("passing", "1")
	}
	for _, t := range q.Tags {
		v.Add("tag", t)
	}
	if q.Index != 0 {
		v.Set("index", strconv.FormatUint(q.Index, 10))
	}
	if q.Wait != 0 {
		v.Set("wait", q.Wait.String())
	}
	return v
}

// Services lists every service with instances, and the catalog index.
func (c *Client) Services(ctx context.Context, q Query) ([]catalog.ServiceSummary, uint64, error) {
	var out struct {
		Index    uint64                   `json:"index"`
		Services []catalog.ServiceSummary `json:"services"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/services", q.values(), nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Services, out.Index, nil
}

// Instances lists the instances of service that match q, and the service's
// index to block on next.
func (c *Client) Instances(ctx context.Context, service string, q Query) ([]*catalog.Instance, uint64, error) {
	var out struct {
		Index     uint64              `json:"index"`
		Instances []*catalog.Instance `json:"instances"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(service), q.values(), nil, &out); err != nil {
		return nil, 0, err
	}
	return out.Instances, out.Index, nil
}

// Watch follows the changes of service (of every service when service is "")
// from index from, calling fn for each event of the stream (see
// catalog.WatchEvent) until ctx is done, fn returns an error, or the stream
// breaks. It returns the index to resume from. With from 0 the stream starts
// with a snapshot.
func (c *Client) Watch(ctx context.Context, service string, from uint64, fn func(catalog.WatchEvent) error) (uint64, error) {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if from != 0 {
		q.Set("from", strconv.FormatUint(from, 10))
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/watch", q, nil)
	if err != nil {
		return from, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	cursor := from
	for {
		var e catalog.WatchEvent
		if err := dec.Decode(&e); err != nil {
			if ctx.Err() != nil {
				return cursor, ctx.Err()
			}
			return cursor, fmt.Errorf("client: watch stream: %w", err)
		}
		// The cursor moves only past complete states. Several events can
		// share an index, so after a put or delete it stays one below: a
		// resumed stream replays that index's events again, which is
		// harmless (they carry whole instances), rather than lose some.
		// After a resync nothing is complete until synced arrives.
		switch e.Type {
		case catalog.WatchSynced, catalog.WatchProgress:
			cursor = e.Index
		case catalog.WatchPut, catalog.WatchDelete:
			cursor = e.Index - 1
		case catalog.WatchResync:
			cursor = 0
		}
		// The cursor moved first: fn stopping at an event still resumes
		// past a synced or progress line, and replays a put it failed on.
		if err := fn(e); err != nil {
			return cursor, err
		}
	}
}
