// Requests to this origin's /v1 API, with the API key stored in this browser if there is one
// (none is needed on the API's own machine under OPTBENCH_AUTH=loopback).

const KEY_STORE = "optbench.apiKey";

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch (error) {
    return ""; // storage disabled: no key
  }
}

/** Keep the key ("" forgets it). */
export function storeKey(value) {
  try {
    if (value) localStorage.setItem(KEY_STORE, value);
    else localStorage.removeItem(KEY_STORE);
  } catch (error) {
    /* storage disabled: nothing kept */
  }
}

export function keyHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** fetch() that never throws: {ok, status, body}, body the JSON (a problem on errors). */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { Accept: "application/json", ...keyHeaders(), ...(options.headers || {}) },
    });
  } catch (error) {
    return { ok: false, status: 0, body: { title: "The API cannot be reached", detail: String(error) } };
  }
  const type = response.headers.get("content-type") || "";
  let body = null;
  if (type.includes("json")) {
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
  } else {
    body = { detail: await response.text() };
  }
  return { ok: response.ok, status: response.status, body };
}

/** Call tick(isStopped) now and again `every` ms after each one ends, until stop() or it
 * returns false. A hidden tab skips its ticks (nobody is looking). */
export function poller(tick, every) {
  let stopped = false;
  let timer = null;
  const loop = async () => {
    if (stopped) return;
    let again = true;
    if (!document.hidden) {
      try {
        again = (await tick(() => stopped)) !== false;
      } catch (error) {
        console.warn("optbench: refresh failed", error);
      }
    }
    if (!stopped && again) timer = setTimeout(loop, every);
  };
  loop();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
