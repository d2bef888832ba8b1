/*
 * One stream connection for every tab of a browser that follows the same session.
 *
 * Over HTTP/1.1 a browser opens about six connections per host, so with an EventSource
 * per tab the seventh tab of a site stalls without a word. Here the tabs elect one
 * leader with a Web Lock named after the session; the leader holds the connection and
 * relays each event, with its id, on a BroadcastChannel of the same name. When the
 * leader's tab closes, the browser frees the lock and the next tab waiting for it takes
 * over, opening the stream after the last event id it has seen.
 *
 * Nothing is lost or doubled: every relayed event names the event before it (`prev`);
 * a tab whose last event is not that one (it joined late, or the old leader left
 * between two relays) asks the leader to replay what came after its last id, and keeps
 * what arrives meanwhile until the replay is in. Ids already seen are skipped.
 *
 *   var share = ChatAppTabShare.join(name, hooks);
 *   hooks: lead()              this tab now holds the connection: open it
 *          event(message)      an event from the leader: {name, data, id}
 *          status(state)       the leader's connection: "open" or "reconnecting"
 *          settled(history)    the leader settled the turn without its `end`
 *          lastId() / seen(id) this tab's last delivered event id / whether it has an id
 *          record(after)       the events this tab delivered after `after`, for a replay
 *   share.relay(message)  share.status(state)  share.settle(history)  share.leave()
 *
 * ChatAppTabShare.available() is false where Web Locks or BroadcastChannel are missing
 * (an insecure origin, an old browser): each tab then keeps a connection of its own.
 */
(function (global) {
  "use strict";

  // A tab that asked for a replay and heard nothing asks again this often (a leader may
  // be in the middle of taking over).
  var SYNC_AGAIN_MS = 500;

  function available() {
    return !!(global.navigator && global.navigator.locks && typeof global.navigator.locks.request === "function" && typeof global.BroadcastChannel === "function");
  }

  function randomId() {
    return Math.random().toString(36).slice(2) + Date.now().toString(36);
  }

  function join(name, hooks) {
    var me = randomId();
    var channel = new global.BroadcastChannel(name);
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var left = false;
    var release = null;
    var syncing = false;
    var held = [];
    var timer = null;

    var share = {
      leading: false,
      relay: function (message) {
        post({ t: "event", name: message.name, data: message.data, id: message.id, prev: message.prev });
      },
      status: function (state) {
        post({ t: "status", state: state });
      },
      settle: function (history) {
        post({ t: "settled", history: history });
      },
      leave: function () {
        if (left) return;
        left = true;
        global.clearTimeout(timer);
        if (release) release();
        else if (controller) controller.abort();
        channel.close();
      }
    };

    function post(message) {
      if (left) return;
      try {
        channel.postMessage(message);
      } catch (e) {
        // A closing channel: the tabs still waiting resync with the next leader.
      }
    }

    function sync() {
      if (left || share.leading) return;
      syncing = true;
      post({ t: "sync", from: me, after: hooks.lastId() });
      global.clearTimeout(timer);
      timer = global.setTimeout(sync, SYNC_AGAIN_MS);
    }

    function synced(events) {
      syncing = false;
      global.clearTimeout(timer);
      for (var i = 0; i < events.length; i++) hooks.event(events[i]);
      // What came meanwhile follows the replay; a gap the leader could not fill (its
      // record starts after our last id) is not asked about again and again.
      var waiting = held;
      held = [];
      for (var j = 0; j < waiting.length; j++) {
        if (!hooks.seen(waiting[j].id)) hooks.event(waiting[j]);
      }
    }

    function receive(message) {
      if (hooks.seen(message.id)) return;
      if (syncing || message.prev !== hooks.lastId()) {
        // Something between our last event and this one has not reached us yet.
        held.push(message);
        if (!syncing) sync();
        return;
      }
      hooks.event(message);
    }

    channel.onmessage = function (event) {
      var message = event.data || {};
      if (left) return;
      if (message.t === "event") {
        if (!share.leading) receive(message);
      } else if (message.t === "sync") {
        if (share.leading) post({ t: "replay", to: message.from, events: hooks.record(message.after) });
      } else if (message.t === "replay") {
        if (message.to === me && syncing && !share.leading) synced(message.events || []);
      } else if (message.t === "status") {
        if (!share.leading) hooks.status(message.state);
      } else if (message.t === "settled") {
        if (!share.leading) hooks.settled(message.history);
      }
    };

    var options = controller ? { signal: controller.signal } : {};
    global.navigator.locks
      .request(name, options, function () {
        if (left) return null;
        share.leading = true;
        syncing = false;
        global.clearTimeout(timer);
        // What was held back may have a gap before it; the stream, opened after our
        // last id, brings all of it in order.
        held = [];
        hooks.lead();
        // Held until leave(): the browser frees it by itself when the tab goes away.
        return new Promise(function (resolve) {
          release = resolve;
        });
      })
      .then(null, function () {
        // Aborted by leave() before the lock came: nothing to do.
      });
    sync();
    return share;
  }

  global.ChatAppTabShare = { available: available, join: join };
})(window);
