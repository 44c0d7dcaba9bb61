/*
 * The peer table: each peer-*.c file is compiled only when its library was
 * found (bench/meson.build defines HAVE_<PEER>).
 */
#include "bench.h"

#include <stddef.h>

#ifdef HAVE_LIBEV
extern const PeerOps peer_libev;
#endif
#ifdef HAVE_LIBUV
extern const PeerOps peer_libuv;
#endif
#ifdef HAVE_LIBEVENT
extern const PeerOps peer_libevent;
#endif
#ifdef HAVE_GLIB
extern const PeerOps peer_glib;
#endif

const PeerOps *bench_peers[NPEERS] = {
#ifdef HAVE_LIBEV
    [PEER_LIBEV] = &peer_libev,
#endif
#ifdef HAVE_LIBUV
    [PEER_LIBUV] = &peer_libuv,
#endif
#ifdef HAVE_LIBEVENT
    [PEER_LIBEVENT] = &peer_libevent,
#endif
#ifdef HAVE_GLIB
    [PEER_GLIB] = &peer_glib,
#endif
};
