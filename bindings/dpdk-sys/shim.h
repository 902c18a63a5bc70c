/*
 * vpnlb's C shim over DPDK 22.11: what bindgen cannot reach.
 *
 * DPDK's fast-path functions (bursts, mbuf alloc/free/prepend/adj, ring enqueue/dequeue) are
 * `static inline` in the headers, `rte_errno` and `rte_lcore_id` are thread-locals, and most
 * flag values are function-like macros (RTE_BIT64). Each gets a plain out-of-line function or a
 * `static const` here, named `vpnlb_...` / `VPNLB_...`. No logic: each wrapper is one call.
 */
#ifndef VPNLB_DPDK_SHIM_H
#define VPNLB_DPDK_SHIM_H

#include <stdint.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

/* ---- constants (bindgen turns these into Rust `const`s) ---- */

static const uint64_t VPNLB_ETH_RSS_IPV4 = RTE_ETH_RSS_IPV4;
static const uint64_t VPNLB_ETH_RSS_IPV6 = RTE_ETH_RSS_IPV6;
static const uint64_t VPNLB_ETH_RSS_IP = RTE_ETH_RSS_IP;
static const uint64_t VPNLB_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
static const uint64_t VPNLB_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
/* RTE_ETH_RSS_L3_SRC_ONLY is bit 63, which bindgen cannot evaluate (it reads constants as i64):
 * src/lib.rs defines VPNLB_ETH_RSS_L3_SRC_ONLY and shim.c checks it against DPDK's value. */
static const uint64_t VPNLB_ETH_RSS_L3_DST_ONLY = RTE_ETH_RSS_L3_DST_ONLY;
static const uint32_t VPNLB_ETH_MQ_RX_NONE = RTE_ETH_MQ_RX_NONE;
static const uint32_t VPNLB_ETH_MQ_RX_RSS = RTE_ETH_MQ_RX_RSS;
static const uint16_t VPNLB_ETH_RETA_GROUP_SIZE = RTE_ETH_RETA_GROUP_SIZE;

static const uint64_t VPNLB_ETH_RX_OFFLOAD_IPV4_CKSUM = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
static const uint64_t VPNLB_ETH_RX_OFFLOAD_UDP_CKSUM = RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
static const uint64_t VPNLB_ETH_RX_OFFLOAD_TCP_CKSUM = RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
static const uint64_t VPNLB_ETH_RX_OFFLOAD_SCATTER = RTE_ETH_RX_OFFLOAD_SCATTER;
static const uint64_t VPNLB_ETH_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
static const uint64_t VPNLB_ETH_TX_OFFLOAD_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
static const uint64_t VPNLB_ETH_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
static const uint64_t VPNLB_ETH_TX_OFFLOAD_MULTI_SEGS = RTE_ETH_TX_OFFLOAD_MULTI_SEGS;

static const uint64_t VPNLB_MBUF_F_RX_RSS_HASH = RTE_MBUF_F_RX_RSS_HASH;
static const uint64_t VPNLB_MBUF_F_RX_IP_CKSUM_MASK = RTE_MBUF_F_RX_IP_CKSUM_MASK;
static const uint64_t VPNLB_MBUF_F_RX_IP_CKSUM_BAD = RTE_MBUF_F_RX_IP_CKSUM_BAD;
static const uint64_t VPNLB_MBUF_F_RX_IP_CKSUM_GOOD = RTE_MBUF_F_RX_IP_CKSUM_GOOD;
static const uint64_t VPNLB_MBUF_F_RX_L4_CKSUM_MASK = RTE_MBUF_F_RX_L4_CKSUM_MASK;
static const uint64_t VPNLB_MBUF_F_RX_L4_CKSUM_BAD = RTE_MBUF_F_RX_L4_CKSUM_BAD;
static const uint64_t VPNLB_MBUF_F_RX_L4_CKSUM_GOOD = RTE_MBUF_F_RX_L4_CKSUM_GOOD;
static const uint64_t VPNLB_MBUF_F_TX_IPV4 = RTE_MBUF_F_TX_IPV4;
static const uint64_t VPNLB_MBUF_F_TX_IPV6 = RTE_MBUF_F_TX_IPV6;
static const uint64_t VPNLB_MBUF_F_TX_IP_CKSUM = RTE_MBUF_F_TX_IP_CKSUM;
static const uint64_t VPNLB_MBUF_F_TX_TCP_CKSUM = RTE_MBUF_F_TX_TCP_CKSUM;
static const uint64_t VPNLB_MBUF_F_TX_UDP_CKSUM = RTE_MBUF_F_TX_UDP_CKSUM;

static const uint16_t VPNLB_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM;
static const uint16_t VPNLB_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE;
static const uint16_t VPNLB_MAX_ETHPORTS = RTE_MAX_ETHPORTS;
static const uint16_t VPNLB_MAX_QUEUES_PER_PORT = RTE_MAX_QUEUES_PER_PORT;
static const uint32_t VPNLB_MAX_LCORE = RTE_MAX_LCORE;
static const uint32_t VPNLB_LCORE_ID_ANY = LCORE_ID_ANY;
static const int32_t VPNLB_SOCKET_ID_ANY = SOCKET_ID_ANY;
static const uint32_t VPNLB_RING_F_SP_ENQ = RING_F_SP_ENQ;
static const uint32_t VPNLB_RING_F_SC_DEQ = RING_F_SC_DEQ;
static const uint32_t VPNLB_RING_F_EXACT_SZ = RING_F_EXACT_SZ;
static const uint32_t VPNLB_RING_NAMESIZE = RTE_RING_NAMESIZE;
static const uint32_t VPNLB_MEMPOOL_NAMESIZE = RTE_MEMPOOL_NAMESIZE;
static const uint32_t VPNLB_ETH_NAME_MAX_LEN = RTE_ETH_NAME_MAX_LEN;
static const uint32_t VPNLB_ETH_XSTATS_NAME_SIZE = RTE_ETH_XSTATS_NAME_SIZE;

/* ---- thread-locals ---- */

/** `rte_errno` of the calling thread. */
int vpnlb_errno(void);
/** `rte_lcore_id()` of the calling thread (`LCORE_ID_ANY` for unregistered threads). */
unsigned int vpnlb_lcore_id(void);

/* ---- cycles and CPU hints ---- */

uint64_t vpnlb_rdtsc(void);
void vpnlb_pause(void);
void vpnlb_prefetch0(const void *p);

/* ---- ethdev bursts ---- */

uint16_t vpnlb_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			    uint16_t nb_pkts);
uint16_t vpnlb_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			    uint16_t nb_pkts);

/* ---- mbufs ---- */

/* The per-packet field accesses (mtod, data/pkt length, headroom, tailroom, segments, port,
 * ol_flags) and prepend/adj are done in Rust on the bindgen layout by the vpnlb-dpdk crate, as
 * DPDK's inlines do them, without a call. Their wrappers stay: its tests check the Rust against
 * them, that is against DPDK's own inline functions. */

struct rte_mbuf *vpnlb_pktmbuf_alloc(struct rte_mempool *mp);
int vpnlb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void vpnlb_pktmbuf_free(struct rte_mbuf *m);
void vpnlb_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count);
char *vpnlb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *vpnlb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *vpnlb_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int vpnlb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
/** `rte_pktmbuf_mtod(m, uint8_t *)`: the first segment's data. */
uint8_t *vpnlb_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t vpnlb_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t vpnlb_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t vpnlb_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t vpnlb_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t vpnlb_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t vpnlb_pktmbuf_port(const struct rte_mbuf *m);
/** Records the port a frame belongs to (the pipeline's RX port, for hand-offs between workers). */
void vpnlb_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port);
uint64_t vpnlb_pktmbuf_ol_flags(const struct rte_mbuf *m);
uint32_t vpnlb_pktmbuf_rss_hash(const struct rte_mbuf *m);
/** Sets the TX offload request: `ol_flags |= flags`, `l2_len`, `l3_len`. */
void vpnlb_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t flags, uint16_t l2_len,
				  uint16_t l3_len);
uint16_t vpnlb_pktmbuf_refcnt(const struct rte_mbuf *m);
int vpnlb_pktmbuf_is_direct(const struct rte_mbuf *m);

/* ---- rings ---- */

unsigned int vpnlb_ring_enqueue_burst(struct rte_ring *r, void *const *obj_table, unsigned int n,
				      unsigned int *free_space);
unsigned int vpnlb_ring_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned int n,
				      unsigned int *available);
unsigned int vpnlb_ring_sp_enqueue_burst(struct rte_ring *r, void *const *obj_table,
					 unsigned int n, unsigned int *free_space);
unsigned int vpnlb_ring_sc_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned int n,
					 unsigned int *available);
unsigned int vpnlb_ring_count(const struct rte_ring *r);
unsigned int vpnlb_ring_free_count(const struct rte_ring *r);

#endif /* VPNLB_DPDK_SHIM_H */
