// Entitlement from a real browser: a page in Debian's Chromium (headless, through playwright-core; as in
// test/90.client-browser) cannot set headers on a WebSocket, so it puts its JWT on the URL —
// `new WebSocket(url + '?token=' + encodeURIComponent(jwt))` — and must get `AUTH ok` first, then messages on the
// subjects its token grants and `ERR forbidden` on the others. The token is signed here with node:crypto.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM, describeWith, startServer } from './helpers';
import { HsIssuer, nowS } from './entitlement-kit';

const SUITE = { timeout: 120_000 };

/**
 * Page code (a string: this project compiles without the DOM library): opens the WebSocket with the token on the
 * URL and keeps every message in window.got; window.closeCode gets the close code.
 */
const CONNECT = (url: string, token: string) => `(async () => {
  window.got = [];
  window.closeCode = null;
  const ws = new WebSocket(${JSON.stringify(url)} + '?token=' + encodeURIComponent(${JSON.stringify(token)}));
  window.ws = ws;
  ws.onmessage = (e) => window.got.push(typeof e.data === 'string' ? e.data : '<binary>');
  ws.onclose = (e) => (window.closeCode = e.code);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('the WebSocket failed to open'));
  });
  return true;
})()`;

/** Waits (polling the page) until window.got has at least `n` messages; returns them. */
async function messages(page: Page, n: number, what: string): Promise<string[]> {
  const handle = await page.waitForFunction(`window.got.length >= ${n} ? window.got.slice() : null`, undefined, { timeout: 15_000, polling: 20 }).catch(async (e: Error) => {
    assert.fail(`timed out waiting for ${what}; the page has ${JSON.stringify(await page.evaluate('window.got'))} (${e.message})`);
  });
  return (await handle!.jsonValue()) as string[];
}

describeWith(NEEDS_CHROMIUM, 'entitlement from headless Chromium (?token= on the WebSocket URL)', SUITE, () => {
  const issuer = new HsIssuer();
  const server = startServer({ Entitlement: 'JWT', 'Entitlement.JWT.Secret': issuer.base64 });
  let browser: Browser;
  const problems: string[] = [];
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
  });

  async function newPage(): Promise<Page> {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
    return page;
  }

  it('AUTH ok first, then a message on a permitted subject and ERR forbidden on a forbidden one', async () => {
    const exp = nowS() + 600;
    const jwt = issuer.raw({ exp, permissions: { sub: ['/browser/quotes/*'], pub: ['/browser/orders/{user}'] } });
    const page = await newPage();
    await page.evaluate(CONNECT(server.url, jwt));
    assert.deepEqual(await messages(page, 1, 'the AUTH answer'), [`AUTH ok ${exp}`]);

    await page.evaluate(`(() => {
      window.ws.send('SUB /browser/quotes/IBM /browser/secret');
      window.ws.send('PUB /browser/orders/alice o1\\nbuy');
      window.ws.send('PUB /browser/quotes/IBM o2\\nspoof');
      window.ws.send('PING ready');
    })()`);
    assert.deepEqual(await messages(page, 5, 'the answers and the PONG'), [
      `AUTH ok ${exp}`,
      'ERR forbidden /browser/secret: not permitted by the token',
      'ACK o1',
      'ERR forbidden o2 /browser/quotes/IBM: not permitted by the token',
      'PONG ready',
    ]);

    assert.equal(server.publish('/browser/quotes/IBM', '{"price":141.5}'), true);
    server.publish('/browser/secret', 'not for this page');
    const got = await messages(page, 6, 'the MSG on /browser/quotes/IBM');
    assert.match(got[5], /^MSG \/browser\/quotes\/IBM [0-9a-z]+:\d+\n\{"price":141\.5\}$/);
    // Nothing on the forbidden subject: a PING barrier after it.
    await page.evaluate(`window.ws.send('PING end')`);
    assert.deepEqual((await messages(page, 7, 'PONG end')).slice(6), ['PONG end']);
    assert.equal(await page.evaluate('window.closeCode'), null);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a refused token on the URL: AUTH invalid first, the connection stays open and anonymous', async () => {
    const page = await newPage();
    await page.evaluate(CONNECT(server.url, issuer.raw({ exp: nowS() - 30, permissions: { all: ['/*'] } })));
    await page.evaluate(`window.ws.send('SUB /browser/quotes/IBM'); window.ws.send('PING x')`);
    assert.deepEqual(await messages(page, 3, 'the answers'), [
      'AUTH invalid expired',
      'ERR forbidden /browser/quotes/IBM: not permitted without a token; send AUTH <token> first',
      'PONG x',
    ]);
    assert.equal(await page.evaluate('window.closeCode'), null);
    assert.deepEqual(problems, []);
    await page.close();
  });
});
