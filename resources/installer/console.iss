; Inno Setup 6 script: the Deploy Console setup for a technician's workstation.
;
; Compiled by build_installer.py, which passes:
;   /DAppVersion=0.1.0  /DSourceDir=<dist>\deploy-console  /DServerPort=8765
; What it does: installs the frozen console into Program Files, adds a Start-menu
; entry (and optionally a desktop icon), opens the embedded server's TCP port in the
; Windows firewall for deploy-console.exe only, and undoes all of that on uninstall.
; Silent install: deploy-console-<version>-setup.exe /VERYSILENT [/PORT=8765]

#ifndef AppVersion
  #error Pass /DAppVersion=<version> (build_installer.py does)
#endif
#ifndef SourceDir
  #error Pass /DSourceDir=<folder of the frozen deploy-console bundle>
#endif
#ifndef ServerPort
  #define ServerPort "8765"
#endif

#define AppName "Deploy Console"
#define AppExe "deploy-console.exe"
#define FirewallRule "Deploy Console server"

[Setup]
; Never change AppId: it is how a newer setup finds and upgrades an installed one.
AppId={{5B0E3C2A-7D41-4C4B-9E5A-2F6D9A1C8E31}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Deploy Console project
VersionInfoVersion={#AppVersion}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
UninstallDisplayIcon={app}\{#AppExe}
; Admin rights: Program Files and the firewall rule need them.
PrivilegesRequired=admin
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; A running console holds its files open; ask it to close before replacing them.
CloseApplications=yes
RestartApplications=no

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; Files of an older version that this one no longer ships must not linger.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"
Name: "{group}\{cm:UninstallProgram,{#AppName}}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Tasks: desktopicon

[Run]
; Delete first so that an upgrade or a repair leaves exactly one rule.
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall delete rule name=""{#FirewallRule}"""; Flags: runhidden waituntilterminated; StatusMsg: "Configuring the Windows firewall..."
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall add rule name=""{#FirewallRule}"" dir=in action=allow protocol=TCP localport={code:ServerPort} program=""{app}\{#AppExe}"" enable=yes profile=domain,private"; Flags: runhidden waituntilterminated; StatusMsg: "Configuring the Windows firewall..."
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallRun]
Filename: "{sys}\netsh.exe"; Parameters: "advfirewall firewall delete rule name=""{#FirewallRule}"""; Flags: runhidden waituntilterminated; RunOnceId: "DeleteFirewallRule"

[Code]
{ The port the firewall rule opens: /PORT=<n> on the setup's command line, else the
  console's default. TODO(installer): the console's Settings dialog can move the server
  to another port; the rule does not follow, so the dialog should say so. }
function ServerPort(Param: String): String;
var
  Port: Integer;
begin
  Result := ExpandConstant('{param:PORT|{#ServerPort}}');
  Port := StrToIntDef(Result, 0);
  if (Port < 1) or (Port > 65535) then
    Result := '{#ServerPort}';
end;
