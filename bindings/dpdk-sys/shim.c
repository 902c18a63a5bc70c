/* See shim.h: one out-of-line wrapper per DPDK static inline, thread-local or macro. */
#include "shim.h"

/* src/lib.rs spells this constant out (see shim.h); keep the two in step. */
_Static_assert(RTE_ETH_RSS_L3_SRC_ONLY == (1ULL << 63), "VPNLB_ETH_RSS_L3_SRC_ONLY in src/lib.rs");

int vpnlb_errno(void) { return rte_errno; }
unsigned int vpnlb_lcore_id(void) { return rte_lcore_id(); }

uint64_t vpnlb_rdtsc(void) { return rte_rdtsc(); }
void vpnlb_pause(void) { rte_pause(); }
void vpnlb_prefetch0(const void *p) { rte_prefetch0(p); }

uint16_t vpnlb_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			    uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t vpnlb_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			    uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *vpnlb_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int vpnlb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void vpnlb_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void vpnlb_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

char *vpnlb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *vpnlb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
char *vpnlb_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int vpnlb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint8_t *vpnlb_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint16_t vpnlb_pktmbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }
uint32_t vpnlb_pktmbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }
uint16_t vpnlb_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t vpnlb_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint16_t vpnlb_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t vpnlb_pktmbuf_port(const struct rte_mbuf *m) { return m->port; }
void vpnlb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port) { m->port = port; }
uint64_t vpnlb_pktmbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
uint32_t vpnlb_pktmbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }

void vpnlb_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t flags, uint16_t l2_len,
				  uint16_t l3_len)
{
	m->ol_flags |= flags;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
}

uint16_t vpnlb_pktmbuf_refcnt(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
int vpnlb_pktmbuf_is_direct(const struct rte_mbuf *m) { return RTE_MBUF_DIRECT(m) ? 1 : 0; }

unsigned int vpnlb_ring_enqueue_burst(struct rte_ring *r, void *const *obj_table, unsigned int n,
				      unsigned int *free_space)
{
	return rte_ring_enqueue_burst(r, obj_table, n, free_space);
}

unsigned int vpnlb_ring_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned int n,
				      unsigned int *available)
{
	return rte_ring_dequeue_burst(r, obj_table, n, available);
}

unsigned int vpnlb_ring_sp_enqueue_burst(struct rte_ring *r, void *const *obj_table,
					 unsigned int n, unsigned int *free_space)
{
	return rte_ring_sp_enqueue_burst(r, obj_table, n, free_space);
}

unsigned int vpnlb_ring_sc_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned int n,
					 unsigned int *available)
{
	return rte_ring_sc_dequeue_burst(r, obj_table, n, available);
}

unsigned int vpnlb_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned int vpnlb_ring_free_count(const struct rte_ring *r) { return rte_ring_free_count(r); }
