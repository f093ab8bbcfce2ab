// Package route is the edge router's route table: which backends serve a
// request's host and path, or a connection to one of the router's TCP
// ports.
//
// # Routes
//
// A route is a host and path prefix ("i.com/static", or "/css" for any
// host), or a TCP listener port (":3306"), with options and members. The
// members are service instances whose route tags name the route, and the
// targets of route add lines. A Table holds the routes; it is immutable,
// and With makes the next one from a service's instances, copying only
// what that service touches, so the router swaps tables atomically and
// never rebuilds them.
//
// # Tags
//
// Routes come from registry tags in Fabio's syntax: TagPrefix, the route,
// then options, separated by spaces.
//
//	urlprefix-/css                          any host, paths starting /css
//	urlprefix-i.com/static                  host i.com, paths starting /static
//	urlprefix-mysite.com/                   everything for mysite.com
//	urlprefix-*.example.com/                a.example.com, a.b.example.com, ...
//	urlprefix-/foo/bar strip=/foo           forward /foo/bar/x as /bar/x
//	urlprefix-/api prepend=/v2              forward /api/x as /v2/api/x
//	urlprefix-/api proto=https tlsskipverify=true host=dst
//	urlprefix-/api weight=0.1               a canary: these instances get 10%
//	urlprefix-:3306 proto=tcp               connections to the router's :3306
//
// proto is http (the default), https, grpc (HTTP/2 without TLS) or tcp
// (only, and always, for a :port route). host sets the Host header sent
// upstream: a name, or dst for the member's address. weight is a fraction
// in (0, 1] of the route's traffic that the service's instances carrying
// the tag share, by their registered weights; the route's other members
// share the rest by theirs. Canary fractions over 1 in all are scaled down
// to 1 and leave the others nothing; canaries alone are scaled up to 1.
//
// A tag that cannot be used — an unknown option, a bad value, a route
// without '/', a port out of range, a host that is not a DNS name — is
// skipped with a *TagError saying what to fix; the instance's other tags
// still count.
//
// # Overrides
//
// The router's config file may hold Fabio's route language (see Override
// and ParseOverrides): route add for targets outside the registry, which
// join the registry's members; route del to keep a service's, a route's,
// a target's or tagged instances' members off routes; route weight to give
// a service's instances, or tagged ones, a fraction of a route's traffic.
//
// # Matching
//
// A request's host is matched without its port and case. Routes of the
// exact host come first, then those of wildcard hosts, the longest suffix
// first (*.a.example.com before *.example.com), then routes for any host;
// the first of these with a matching route wins. Among one host's routes
// the longest prefix of the path wins. Paths match as Fabio's default
// matcher does: plain, case-sensitive string prefixes, so /foo matches
// /foo/bar and /foobar.
//
// When services' tags give one route different options, the options of
// the lexically smallest service win; the others' instances are left off
// the route and With reports an error. Each service's parts are kept, so
// when the winner goes the next one's options take over.
//
// # Where we differ from Fabio
//
//   - A tag's weight= is shared by all the service's instances carrying it,
//     as route weight lines are; Fabio gives each instance the fraction.
//   - Shares follow registered weights (catalog.Instance.Weight), not
//     equal splits. Critical and weight-0 instances get no traffic; their
//     tags still make the route, which then answers with an error rather
//     than falling through to a shorter prefix.
//   - Route hosts may not carry a port, and matching ignores the request's
//     port; Fabio strips only :80 and :443. Wildcards are a whole first
//     label (*.example.com), not globs.
//   - A :port route needs proto=tcp; options that cannot apply (strip on a
//     TCP route, tlsskipverify without https) and Fabio options the router
//     lacks (allow, deny, auth, register, pxyproto, redirect) are errors,
//     not ignored. There is no $VAR expansion and the tag prefix is fixed.
//   - Weights in the route language are fractions from 0 to 1 (0 clears a
//     fraction); Fabio also takes larger numbers.
//   - A path left without a leading '/' by strip gets one.
//   - route del and route weight lines apply to registry routes whatever
//     their place in the file, and to route add lines above them; an
//     unmatched route weight line is not an error, since matching
//     instances may come later.
package route
