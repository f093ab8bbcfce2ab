/*
 * table.h: the reader of Discotech's shared-memory table, as libdisco.so
 * uses it. The layout is described in docs/shmtable.md and written by the
 * Go package shmtable; a test writes a table there and reads it back here.
 *
 * Reading never blocks, locks, allocates or makes a system call: a reader
 * copies what it needs out of the active slot and checks the slot's
 * sequence number did not move meanwhile (a sequence lock), retrying if it
 * did. Opening the table (and mapping it again when the agent replaced it
 * with a bigger one) is the only part that makes system calls.
 */
#ifndef DISCO_TABLE_H
#define DISCO_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DISCO_TABLE_MAGIC "DISCOTBL"
#define DISCO_TABLE_VERSION 1
#define DISCO_TABLE_HEADER_SIZE 4096
#define DISCO_TABLE_FLAG_SUPERSEDED 1u
#define DISCO_TABLE_SLOT_HEADER 64
#define DISCO_TABLE_SERVICE_SIZE 96
#define DISCO_TABLE_BACKEND_SIZE 32
#define DISCO_TABLE_BYADDR_SIZE 8
#define DISCO_TABLE_MAX_NAME 63
/* How many times a read is tried before giving up: a writer publishes at
 * most a few times a second, so more than a couple of retries means
 * something is wrong with the table, not that the reader was unlucky. */
#define DISCO_TABLE_TRIES 64

/* A mapped table. */
struct disco_table {
	const uint8_t *mem;
	size_t size;
	uint64_t slot_size;
};

/* One backend, copied out of the table. */
struct disco_backend {
	uint8_t family; /* 4 or 6 */
	uint16_t port;
	uint32_t weight;
	uint8_t addr[16]; /* network order; IPv4 in the first 4 bytes */
};

/* Header fields. */
static inline const _Atomic uint32_t *disco__u32(const uint8_t *p) { return (const _Atomic uint32_t *)(const void *)p; }
static inline const _Atomic uint64_t *disco__u64(const uint8_t *p) { return (const _Atomic uint64_t *)(const void *)p; }
static inline uint32_t disco__le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t disco__le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* disco_table_check validates a mapping's header: 0 when usable. */
static inline int disco_table_check(const uint8_t *mem, size_t size, uint64_t *slot_size)
{
	if (size < DISCO_TABLE_HEADER_SIZE || memcmp(mem, DISCO_TABLE_MAGIC, 8) != 0)
		return -1;
	if (disco__le32(mem + 8) != DISCO_TABLE_VERSION || disco__le32(mem + 12) != DISCO_TABLE_HEADER_SIZE)
		return -1;
	uint64_t ss;
	memcpy(&ss, mem + 16, 8);
	if (ss < DISCO_TABLE_SLOT_HEADER || DISCO_TABLE_HEADER_SIZE + 2 * ss > size)
		return -1;
	*slot_size = ss;
	return 0;
}

/* disco_table_superseded: the agent replaced the file; map it again. */
static inline int disco_table_superseded(const struct disco_table *t)
{
	return (atomic_load_explicit(disco__u32(t->mem + 28), memory_order_acquire) & DISCO_TABLE_FLAG_SUPERSEDED) != 0;
}

/* disco_table_generation is bumped at every publish. */
static inline uint64_t disco_table_generation(const struct disco_table *t)
{
	return atomic_load_explicit(disco__u64(t->mem + 32), memory_order_acquire);
}

/* A read in progress: the slot it reads and the sequence number it saw. */
struct disco__read {
	const uint8_t *slot;
	uint64_t seq;
};

static inline int disco__begin(const struct disco_table *t, struct disco__read *r)
{
	uint32_t active = atomic_load_explicit(disco__u32(t->mem + 24), memory_order_acquire) & 1u;
	r->slot = t->mem + DISCO_TABLE_HEADER_SIZE + (size_t)active * t->slot_size;
	r->seq = atomic_load_explicit(disco__u64(r->slot), memory_order_acquire);
	return (r->seq & 1) == 0;
}

/* disco__valid: the slot did not change since disco__begin. */
static inline int disco__valid(const struct disco__read *r)
{
#ifdef DISCO_TABLE_TEST_NO_SEQLOCK
	/* Only for shmtable's test that shows torn reads are caught. */
	(void)r;
	return 1;
#endif
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(disco__u64(r->slot), memory_order_relaxed) == r->seq;
}

/* Offsets inside a slot, bounds-checked against the slot size so that a
 * torn read (caught by disco__valid afterwards) cannot read out of bounds. */
struct disco__slot {
	uint32_t n_services, n_backends, services, backends, by_addr, n_by_addr;
};

static inline int disco__slot(const struct disco_table *t, const uint8_t *s, struct disco__slot *o)
{
	o->n_services = disco__le32(s + 16);
	o->n_backends = disco__le32(s + 20);
	o->services = disco__le32(s + 24);
	o->backends = disco__le32(s + 28);
	o->by_addr = disco__le32(s + 32);
	o->n_by_addr = disco__le32(s + 36);
	uint64_t end_s = (uint64_t)o->services + (uint64_t)o->n_services * DISCO_TABLE_SERVICE_SIZE;
	uint64_t end_b = (uint64_t)o->backends + (uint64_t)o->n_backends * DISCO_TABLE_BACKEND_SIZE;
	uint64_t end_a = (uint64_t)o->by_addr + (uint64_t)o->n_by_addr * DISCO_TABLE_BYADDR_SIZE;
	return end_s <= t->slot_size && end_b <= t->slot_size && end_a <= t->slot_size && o->n_by_addr <= o->n_services;
}

/* disco__service_cmp compares a name with a service entry's NUL-padded name. */
static inline int disco__name_cmp(const uint8_t *entry, const char *name, size_t len)
{
	int c = strncmp((const char *)entry, name, len);
	if (c != 0)
		return c;
	return entry[len] == 0 ? 0 : 1;
}

/* disco__copy_backends copies backends [first, first+count) of a slot's
 * backend array, at most max of them. */
static inline void disco__copy_backends(const uint8_t *backends, uint32_t first, uint32_t count,
					struct disco_backend *out, int max)
{
	for (uint32_t i = 0; i < count && (int)i < max; i++) {
		const uint8_t *b = backends + (size_t)(first + i) * DISCO_TABLE_BACKEND_SIZE;
		out[i].family = b[0];
		out[i].port = disco__le16(b + 2);
		out[i].weight = disco__le32(b + 4);
		memcpy(out[i].addr, b + 8, 16);
	}
}

/*
 * disco_table_service copies the service called name (len bytes, lower
 * case): its magic address into magic[4], and up to max of its backends
 * into out, returning how many it has (which may exceed max), or -1 when
 * the table has no such service.
 */
static inline int disco_table_service(const struct disco_table *t, const char *name, size_t len,
				      uint8_t magic[4], struct disco_backend *out, int max)
{
	if (len == 0 || len > DISCO_TABLE_MAX_NAME)
		return -1;
	for (int tries = 0; tries < DISCO_TABLE_TRIES; tries++) {
		struct disco__read r;
		struct disco__slot o;
		if (!disco__begin(t, &r) || !disco__slot(t, r.slot, &o))
			continue;
		int found = -1;
		uint32_t lo = 0, hi = o.n_services;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			int c = disco__name_cmp(r.slot + o.services + (size_t)mid * DISCO_TABLE_SERVICE_SIZE, name, len);
			if (c == 0) {
				found = (int)mid;
				break;
			}
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		int n = -1;
		if (found >= 0) {
			const uint8_t *e = r.slot + o.services + (size_t)found * DISCO_TABLE_SERVICE_SIZE;
			memcpy(magic, e + 64, 4);
			uint32_t first = disco__le32(e + 68), count = disco__le32(e + 72);
			if ((uint64_t)first + count > o.n_backends)
				continue; /* torn: try again */
			n = (int)count;
			disco__copy_backends(r.slot + o.backends, first, count, out, max);
		}
		if (disco__valid(&r))
			return n;
	}
	return -1;
}

/*
 * disco_table_by_magic finds the service whose magic address is addr (in
 * network order), copying its name (NUL-terminated, at most 64 bytes with
 * the NUL) into name and up to max backends into out. It returns the
 * service's backend count, or -1 when addr is no service's.
 */
static inline int disco_table_by_magic(const struct disco_table *t, const uint8_t addr[4], char name[64],
				       struct disco_backend *out, int max)
{
	uint32_t want = ((uint32_t)addr[0] << 24) | ((uint32_t)addr[1] << 16) | ((uint32_t)addr[2] << 8) | addr[3];
	for (int tries = 0; tries < DISCO_TABLE_TRIES; tries++) {
		struct disco__read r;
		struct disco__slot o;
		if (!disco__begin(t, &r) || !disco__slot(t, r.slot, &o))
			continue;
		int64_t idx = -1;
		uint32_t lo = 0, hi = o.n_by_addr;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			const uint8_t *x = r.slot + o.by_addr + (size_t)mid * DISCO_TABLE_BYADDR_SIZE;
			uint32_t a = disco__le32(x);
			if (a == want) {
				idx = disco__le32(x + 4);
				break;
			}
			if (a < want)
				lo = mid + 1;
			else
				hi = mid;
		}
		int n = -1;
		if (idx >= 0) {
			if ((uint64_t)idx >= o.n_services)
				continue;
			const uint8_t *e = r.slot + o.services + (size_t)idx * DISCO_TABLE_SERVICE_SIZE;
			memcpy(name, e, 63);
			name[63] = 0;
			uint32_t first = disco__le32(e + 68), count = disco__le32(e + 72);
			if ((uint64_t)first + count > o.n_backends)
				continue;
			n = (int)count;
			disco__copy_backends(r.slot + o.backends, first, count, out, max);
		}
		if (disco__valid(&r))
			return n;
	}
	return -1;
}

/* disco_table_count returns the number of services, or -1. */
static inline int disco_table_count(const struct disco_table *t)
{
	for (int tries = 0; tries < DISCO_TABLE_TRIES; tries++) {
		struct disco__read r;
		struct disco__slot o;
		if (!disco__begin(t, &r) || !disco__slot(t, r.slot, &o))
			continue;
		int n = (int)o.n_services;
		if (disco__valid(&r))
			return n;
	}
	return -1;
}

/* disco_table_name copies the i-th service's name (in name order). */
static inline int disco_table_name(const struct disco_table *t, int i, char name[64])
{
	for (int tries = 0; tries < DISCO_TABLE_TRIES; tries++) {
		struct disco__read r;
		struct disco__slot o;
		if (!disco__begin(t, &r) || !disco__slot(t, r.slot, &o))
			continue;
		if (i < 0 || (uint32_t)i >= o.n_services)
			return -1;
		memcpy(name, r.slot + o.services + (size_t)i * DISCO_TABLE_SERVICE_SIZE, 63);
		name[63] = 0;
		if (disco__valid(&r))
			return 0;
	}
	return -1;
}

#endif
