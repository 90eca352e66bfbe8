import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// The server embeds dist/ and serves it under /console/; in dev the API is proxied
// so the page and the API share an origin, as they do in production.
const server = process.env.NIMBUS_SERVER || 'http://127.0.0.1:18080';
const proxy = Object.fromEntries(['/v1', '/healthz', '/metrics'].map((path) => [path, server]));

export default defineConfig({
  base: '/console/',
  plugins: [preact()],
  build: { outDir: 'dist', assetsDir: 'assets' },
  server: { proxy },
});
