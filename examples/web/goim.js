// For static servers serving the repository root. corecast's /demo/goim.js serves clients/js/goim.js itself.
export * from '../../clients/js/goim.js';
