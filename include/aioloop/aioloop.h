/*
 * aioloop: QEMU's event-loop model as a standalone C library.
 *
 * The umbrella header: include this to get every public aioloop API.
 * See README.md for an example and docs/design.md for the architecture.
 */
#ifndef AIOLOOP_AIOLOOP_H
#define AIOLOOP_AIOLOOP_H

#include <aioloop/compiler.h>
#include <aioloop/error.h>
#include <aioloop/event-notifier.h>
#include <aioloop/timer.h>
#include <aioloop/aio.h>
#include <aioloop/iov.h>
#include <aioloop/block-aio.h>
#include <aioloop/block-io.h>
#include <aioloop/thread-pool.h>
#include <aioloop/iothread.h>
#include <aioloop/lockable.h>
#include <aioloop/coroutine.h>
#include <aioloop/aio-gsource.h>
#include <aioloop/aio-wait.h>
#include <aioloop/main-loop.h>

#endif
