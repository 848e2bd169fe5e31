/**
 * refbook's JupyterLab extension: the left sidebar panel "refbook" for the active
 * notebook's kernel, the command "refbook: open dashboard", and the refresh rate in
 * the settings editor.  Everything about a kernel travels over its own comm (target
 * `refbook`); the clusters on this host come from the server extension
 * (GET /refbook/api/clusters), with Jupyter's authentication.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { Connection, ISessionLike } from './connection';
import { RefbookSidebar } from './sidebar';

const PLUGIN_ID = 'refbook-labextension:plugin';
const OPEN_DASHBOARD = 'refbook:open-dashboard';

const ICON = new LabIcon({
  name: 'refbook:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">' +
    '<g class="jp-icon3" fill="#616161"><circle cx="6" cy="6" r="3"/>' +
    '<circle cx="18" cy="6" r="3"/><circle cx="12" cy="18" r="3"/>' +
    '<path d="M7.5 8.2l3.2 7.4 1.6-.7-3.2-7.4zM16.5 8.2l-3.2 7.4-1.6-.7 3.2-7.4z"/></g></svg>'
});

/** A notebook's session (a console, e.g. the dashboard's, does not take the sidebar). */
function sessionOf(w: Widget | null): ISessionLike | null {
  const isNotebook = !!(w as any)?.content?.model?.cells;
  const ctx = (w as any)?.sessionContext;
  return isNotebook && ctx && ctx.kernelChanged && ctx.statusChanged
    ? (ctx as ISessionLike)
    : null;
}

async function fetchClusters(): Promise<any[]> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'refbook', 'api', 'clusters');
  const res = await ServerConnection.makeRequest(url, {}, settings);
  if (!res.ok) {
    throw new Error(`${res.status} ${res.statusText}`);
  }
  return (await res.json()).clusters;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The refbook sidebar: refs, nodes and actors of the active notebook',
  autoStart: true,
  requires: [ILabShell],
  optional: [ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    settings: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const conn = new Connection();
    const sidebar = new RefbookSidebar(conn, fetchClusters, (code?: string) => {
      void app.commands.execute(OPEN_DASHBOARD, code ? { code } : {});
    });
    sidebar.title.icon = ICON;
    shell.add(sidebar, 'left', { rank: 800 });

    // follow the notebook (or console) the person works in; keep the last one while
    // the focus is on something without a kernel (a file, the launcher)
    let lastNotebook: Widget | null = null;
    const follow = () => {
      const ctx = sessionOf(shell.currentWidget);
      if (ctx) {
        lastNotebook = shell.currentWidget;
        conn.follow(ctx);
      } else if (!conn.label) {
        conn.follow(null);
      }
    };
    shell.currentChanged.connect(follow);
    follow();

    app.commands.addCommand(OPEN_DASHBOARD, {
      label: 'refbook: open dashboard',
      caption: "The dashboard of this notebook's cluster, in a panel beside it",
      execute: async args => {
        const w = (sessionOf(shell.currentWidget) ? shell.currentWidget : lastNotebook) as any;
        const path = w?.sessionContext?.path;
        if (!path) {
          return;
        }
        // a console on the notebook's own kernel: the dashboard's widgets render there,
        // in a dockable panel, over the same comm channel (nothing to proxy)
        const panel: any = await app.commands.execute('console:create', {
          path,
          insertMode: 'split-right',
          activate: true
        });
        await panel?.sessionContext?.ready;
        panel?.console?.inject((args?.code as string) || '%refbook dashboard');
      }
    });
    palette?.addItem({ command: OPEN_DASHBOARD, category: 'refbook' });

    if (settings) {
      settings
        .load(PLUGIN_ID)
        .then(s => {
          const apply = () => conn.setInterval(s.get('refreshRate').composite as number);
          s.changed.connect(apply);
          apply();
        })
        .catch(() => undefined);
    }
  }
};

export default plugin;
